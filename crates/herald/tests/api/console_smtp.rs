//! The console's SMTP submission page over plain HTTP: credentials and IP
//! connectors created, revoked and deleted through its forms (each checked
//! through the API), their errors in place, who may use the forms; and how
//! the messages pages show mail received over SMTP and attachments.

use herald_core::{EmailAddress, MessageId, SmtpConnectorId, SmtpCredentialId, Subject, TenantId};
use herald_store::prelude::*;
use herald_store::{Attachment, NewMessage, Origin, SmtpOrigin, SqliteStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::{
    ACME_PRINTERS, ADA_PASSWORD, GLOBEX_PASSWORD, MEMBER_PASSWORD, console_with_two_tenants,
    heading, member_is_refused, unescaped,
};
use crate::console_http::{HttpSession, Page, listed, shown_value};
use crate::helpers::{OPERATOR, TestApp};

/// The test node's embedded database, opened beside the node as a second
/// connection (SQLite in WAL mode takes both).
pub(crate) fn node_store(app: &TestApp) -> SqliteStore {
    SqliteStore::open(&app.dir.path().join("herald.db")).expect("the node's database opens")
}

/// Stores a message as the SMTP listener would once it has received one
/// (`origin` saying who sent it), or as the API does with attachments; its id.
///
/// The listener is not part of this node yet, so the message goes into the
/// node's database directly: what is tested is how the console shows it.
pub(crate) async fn stored_message(
    app: &TestApp,
    tenant: &str,
    subject: &str,
    origin: Origin,
    attachments: Vec<Attachment>,
) -> String {
    let (status, found) = app.get(&format!("/v1/tenants/{tenant}"), OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let tenant_id: TenantId = found["id"].as_str().unwrap().parse().unwrap();
    let to = EmailAddress::parse(&format!("ops@{tenant}.example")).unwrap();
    let raw = matches!(origin, Origin::Smtp(_)).then(|| {
        format!(
            "Received: from client by herald\r\nFrom: app@{tenant}.example\r\nTo: {to}\r\n\
             Subject: {subject}\r\n\r\nhello\r\n"
        )
        .into_bytes()
    });
    let id = MessageId::new();
    let message = NewMessage {
        id,
        tenant_id,
        idempotency_key: None,
        subject: Subject::parse(subject).unwrap(),
        text: Some("hello".into()),
        html: None,
        reply_to: None,
        headers: Vec::new(),
        to: vec![to.into()],
        cc: Vec::new(),
        bcc: Vec::new(),
        used_fallback: false,
        created_at: herald_core::timestamp::now_ms(),
        on_behalf_of: None,
        test_provider: None,
        priority: 0,
        max_pending_tests: None,
        max_queued: None,
        origin,
        raw,
        attachments,
        send_at: None,
        template: None,
        gateway_id: None,
        handoff: None,
    };
    node_store(app).submit(message).await.expect("stored");
    id.to_string()
}

/// An origin over SMTP from `client_addr`, by a credential or a connector.
pub(crate) fn over_smtp(
    credential: Option<&str>,
    connector: Option<&str>,
    client_addr: &str,
) -> Origin {
    Origin::Smtp(SmtpOrigin {
        credential_id: credential.map(|id| id.parse::<SmtpCredentialId>().unwrap()),
        connector_id: connector.map(|id| id.parse::<SmtpConnectorId>().unwrap()),
        client_addr: client_addr.into(),
    })
}

/// The entry of a list with this name.
fn named<'a>(listed: &'a [Value], name: &str) -> Option<&'a Value> {
    listed.iter().find(|entry| entry["name"] == name)
}

/// A tenant administrator's credentials and connectors: each form's errors
/// beside its fields with what was typed, a credential's password shown once
/// (and it is the one Herald checks), an overlap in words, revocation and
/// deletion after their confirmation pages, each answered with its `done`
/// notice; every change seen through the API and in the audit log.
#[tokio::test]
async fn a_tenant_administrator_manages_smtp_credentials_and_connectors_in_the_console() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let smtp = "/t/acme/smtp";
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, smtp).await;
    let invalid = |html: &str, field: &str| html.contains(&format!("id=\"e-{field}\""));

    // The page lists what the tenant has, and is in the navigation.
    let html = admin.get_html(smtp).await;
    let html = unescaped(&html);
    assert!(html.contains("<td>monitoring</td>"), "{html}");
    assert!(html.contains("<td>office printers</td>") && html.contains(ACME_PRINTERS));
    assert!(html.contains("<a href=\"/t/acme/smtp\" aria-current=\"page\">SMTP submission</a>"));

    // Credentials: a missing name and a limit that is not a number, each
    // beside its field; a limit out of range is the API's rule.
    let credentials = format!("{smtp}/credentials");
    let html = admin
        .post_answered(
            &credentials,
            &[("credential_name", ""), ("credential_rate_limit", "sixty")],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "credential_rate_limit") && html.contains("must be a whole number"));
    assert!(html.contains("value=\"sixty\""), "{html}");
    assert_eq!(heading(&html), Some("SMTP submission"));
    let html = admin
        .post_answered(
            &credentials,
            &[("credential_name", ""), ("credential_rate_limit", "60")],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "credential_name"), "{html}");
    let html = admin
        .post_answered(
            &credentials,
            &[
                ("credential_name", "grafana"),
                ("credential_rate_limit", "0"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "credential_rate_limit") && html.contains("1 to 1000000"));
    assert!(html.contains("value=\"grafana\""), "{html}");
    assert_eq!(listed(app, "smtp-credentials").await.len(), 1);

    // A credential: its username and password on the answer, with how to use them.
    let html = admin
        .post_answered(
            &credentials,
            &[
                ("credential_name", "grafana"),
                ("credential_rate_limit", "60"),
            ],
            StatusCode::OK,
        )
        .await;
    assert_eq!(heading(&html), Some("Credential grafana created"));
    let username = shown_value(&html, "smtp-username");
    let password = shown_value(&html, "smtp-password");
    assert!(username.starts_with("acme."), "{username}");
    assert!(password.len() >= 32, "{password}");
    for how in ["587 with STARTTLS, or 465 with TLS", "PLAIN or LOGIN"] {
        assert!(html.contains(how), "{how}: {html}");
    }
    // The server is named as the browser reached this node.
    assert!(html.contains("<code>127.0.0.1</code>"), "{html}");
    let all = listed(app, "smtp-credentials").await;
    let grafana = named(&all, "grafana").expect("the credential is listed");
    assert_eq!(grafana["username"], username.as_str());
    assert_eq!(grafana["rate_limit_per_minute"], 60);
    assert!(!Value::Array(all.clone()).to_string().contains(&password));
    // The password shown is the one Herald checks at AUTH.
    let (_, hash) = node_store(app)
        .smtp_login(&username)
        .await
        .unwrap()
        .expect("the username is known");
    assert_eq!(hash, herald_core::token::hash(&password));
    // Shown once: the list has its username, never its password again.
    let Page { html, .. } = admin.get(smtp).await;
    assert!(
        html.contains("<td>grafana</td>") && html.contains(&username),
        "{html}"
    );
    assert!(!html.contains(&password), "{html}");

    // Revoking asks first, then the list says so.
    let grafana_id = grafana["id"].as_str().unwrap().to_owned();
    let revoke = format!("{credentials}/{grafana_id}/revoke");
    let html = admin.get_html(&revoke).await;
    assert_eq!(heading(&html), Some("Revoke the credential grafana?"));
    assert!(!html.contains(&password));
    let Page { html, .. } = admin
        .post_redirected(
            &revoke,
            &[],
            &format!("{smtp}?done=smtp-credential-revoked"),
        )
        .await;
    assert!(html.contains("Credential revoked"), "{html}");
    assert!(!html.contains("<td>grafana</td>"), "{html}");
    assert!(named(&listed(app, "smtp-credentials").await, "grafana").is_none());
    assert!(
        node_store(app)
            .smtp_login(&username)
            .await
            .unwrap()
            .is_none()
    );
    // Revoked is gone: its confirmation page and form are 404 now.
    assert_eq!(admin.get(&revoke).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.post(&revoke, &[]).await.status, StatusCode::NOT_FOUND);

    // Connectors: each network's error beside the field, named by its place
    // and what was typed; what was typed kept.
    let connectors = format!("{smtp}/connectors");
    let connector = |name: &'static str, cidrs: &'static str| {
        vec![
            ("connector_name", name),
            ("cidrs", cidrs),
            ("connector_rate_limit", ""),
        ]
    };
    let html = admin
        .post_answered(
            &connectors,
            &connector("", "192.0.2.0/24\r\n10.0.0.1/8\r\nnot a network"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    let text = unescaped(&html);
    assert!(
        invalid(&html, "connector_name") && invalid(&html, "cidrs"),
        "{html}"
    );
    assert!(
        text.contains("Network 2 (10.0.0.1/8) has host bits set: the network is 10.0.0.0/8"),
        "{text}"
    );
    assert!(
        text.contains("Network 3 (not a network) must be an IPv4 or IPv6 network"),
        "{text}"
    );
    assert!(!text.contains("Network 1 "), "{text}");
    assert!(text.contains("192.0.2.0/24\r\n10.0.0.1/8\r\nnot a network</textarea>"));
    let html = admin
        .post_answered(
            &connectors,
            &connector("empty", " , "),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        html.contains("Networks must hold 1 to 50 networks"),
        "{html}"
    );
    let html = admin
        .post_answered(
            &connectors,
            &connector("everyone", "0.0.0.0/0"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        unescaped(&html).contains("Network 1 (0.0.0.0/0) is too wide"),
        "{html}"
    );

    // An overlap with one of the tenant's connectors is a conflict, said in
    // words; with another tenant's, that tenant's connector is not named.
    let (status, theirs) = app
        .post(
            "/v1/tenants/globex/smtp-connectors",
            OPERATOR,
            json!({"name": "globex secret relay", "cidrs": ["203.0.113.0/24"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    let html = admin
        .post_answered(
            &connectors,
            &connector("scanners", "198.51.100.128/25"),
            StatusCode::CONFLICT,
        )
        .await;
    let text = unescaped(&html).replace("&quot;", "\"");
    assert!(
        text.contains(
            "The network 198.51.100.128/25 overlaps 198.51.100.0/24 of this tenant's connector \"office printers\""
        ),
        "{text}"
    );
    assert!(html.contains("role=\"alert\"") && html.contains("value=\"scanners\""));
    let html = admin
        .post_answered(
            &connectors,
            &connector("scanners", "203.0.113.16/28"),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        html.contains("another tenant") && !html.contains("globex"),
        "{html}"
    );

    // One connector's own networks may not overlap either.
    let scanners = |cidrs: &'static str| {
        vec![
            ("connector_name", "scanners"),
            ("cidrs", cidrs),
            ("connector_rate_limit", "120"),
        ]
    };
    let html = admin
        .post_answered(
            &connectors,
            &scanners("192.0.2.0/24, 2001:db8:5::/48\r\n192.0.2.200"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        unescaped(&html).contains("Network 3 (192.0.2.200) overlaps 192.0.2.0/24, given before it"),
        "{html}"
    );

    // A connector, its networks separated by commas and lines.
    let Page { html, .. } = admin
        .post_redirected(
            &connectors,
            &scanners("192.0.2.0/24, 2001:db8:5::/48\r\n"),
            &format!("{smtp}?done=smtp-connector-added"),
        )
        .await;
    assert!(html.contains("Connector added"), "{html}");
    assert!(html.contains("<td>scanners</td>"), "{html}");
    let all = listed(app, "smtp-connectors").await;
    let added = named(&all, "scanners").expect("the connector is listed");
    assert_eq!(added["cidrs"], json!(["192.0.2.0/24", "2001:db8:5::/48"]));
    assert_eq!(added["rate_limit_per_minute"], 120);

    // Deleting asks first, then the list says so.
    let delete = format!("{connectors}/{}/delete", added["id"].as_str().unwrap());
    let html = admin.get_html(&delete).await;
    assert_eq!(heading(&html), Some("Delete the connector scanners?"));
    assert!(unescaped(&html).contains("2001:db8:5::/48"), "{html}");
    let Page { html, .. } = admin
        .post_redirected(&delete, &[], &format!("{smtp}?done=smtp-connector-deleted"))
        .await;
    assert!(html.contains("Connector deleted"), "{html}");
    assert!(named(&listed(app, "smtp-connectors").await, "scanners").is_none());
    assert_eq!(admin.get(&delete).await.status, StatusCode::NOT_FOUND);

    // Each change is in the audit log, made in the console by the administrator.
    let (_, audit) = app.get("/v1/tenants/acme/audit", OPERATOR).await;
    let audit = audit.to_string();
    for action in [
        "smtp_credential.create",
        "smtp_credential.revoke",
        "smtp_connector.create",
        "smtp_connector.delete",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    assert!(!audit.contains(&password));
    // The console's audit log names them: one still there by its name and
    // page, the revoked and deleted ones by the names the log recorded.
    let Page { html, .. } = admin.get("/t/acme/audit").await;
    let html = unescaped(&html);
    assert!(
        html.contains(&format!(
            "<a href=\"/t/acme/smtp#connectors\" title=\"{}\">office printers</a>",
            c.smtp_connector_id
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "grafana<span class=\"sub\">deleted <code>{grafana_id}</code>"
        )),
        "{html}"
    );
    assert!(
        html.contains("scanners<span class=\"sub\">deleted"),
        "{html}"
    );
}

/// The forms are a tenant administrator's: acme's member is refused (403),
/// another tenant's administrator is told acme's credentials and connectors
/// do not exist (404), by acme's addresses and by their own, and a form
/// without the session's CSRF token is refused; none of them changes anything.
#[tokio::test]
async fn only_the_tenant_s_administrators_manage_its_smtp_submission() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let smtp = "/t/acme/smtp";
    let credentials = format!("{smtp}/credentials");
    let connectors = format!("{smtp}/connectors");
    let revoke = format!("{credentials}/{}/revoke", c.smtp_credential_id);
    let delete = format!("{connectors}/{}/delete", c.smtp_connector_id);
    let forms = [
        (credentials.clone(), vec![("credential_name", "intruder")]),
        (
            connectors.clone(),
            vec![("connector_name", "intruder"), ("cidrs", "192.0.2.0/24")],
        ),
        (revoke.clone(), vec![]),
        (delete.clone(), vec![]),
    ];
    let before = (
        listed(app, "smtp-credentials").await,
        listed(app, "smtp-connectors").await,
    );
    let unchanged = || async {
        let now = (
            listed(app, "smtp-credentials").await,
            listed(app, "smtp-connectors").await,
        );
        assert_eq!(now, before);
    };

    // Acme's member may use none of the forms, and has no link to the page.
    member_is_refused(app, &[], &forms, &[smtp]).await;
    unchanged().await;

    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    for (path, fields) in &forms {
        let Page { status, html, .. } = stranger.post(path, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
        assert_eq!(heading(&html), Some("Not found"), "{html}");
        assert!(!html.contains("monitoring") && !html.contains("office printers"));
    }
    // By their own tenant's addresses, acme's ids name nothing either.
    for path in [
        format!("/t/globex/smtp/credentials/{}/revoke", c.smtp_credential_id),
        format!("/t/globex/smtp/connectors/{}/delete", c.smtp_connector_id),
    ] {
        assert_eq!(
            stranger.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let Page { status, .. } = stranger.post(&path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
    }
    unchanged().await;

    // A form without this session's token is refused before any handler runs.
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, smtp).await;
    let forged = HttpSession {
        csrf: stranger.csrf.clone(),
        ..admin
    };
    for (path, fields) in &forms {
        let Page { status, .. } = forged.post(path, fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "without its token: {path}");
    }
    unchanged().await;
}

/// Mail received over SMTP is marked in the list, and its page says from
/// which address and by which credential or connector, by name, or that it
/// has been revoked or deleted since; a message with attachments lists them.
#[tokio::test]
async fn smtp_mail_shows_where_it_came_from_and_attachments_are_listed() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let (status, gone) = app
        .post(
            "/v1/tenants/acme/smtp-credentials",
            OPERATOR,
            json!({"name": "old jenkins"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gone}");
    let gone_id = gone["id"].as_str().unwrap();
    let (status, gone_connector) = app
        .post(
            "/v1/tenants/acme/smtp-connectors",
            OPERATOR,
            json!({"name": "old scanner", "cidrs": ["192.0.2.7"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gone_connector}");
    let gone_connector_id = gone_connector["id"].as_str().unwrap();
    let credential = stored_message(
        app,
        "acme",
        "Grafana alert",
        over_smtp(Some(&c.smtp_credential_id), None, "10.1.2.3"),
        Vec::new(),
    )
    .await;
    let connector = stored_message(
        app,
        "acme",
        "Printer out of toner",
        over_smtp(None, Some(&c.smtp_connector_id), "198.51.100.20"),
        Vec::new(),
    )
    .await;
    let revoked = stored_message(
        app,
        "acme",
        "Build broken",
        over_smtp(Some(gone_id), None, "2001:db8::25"),
        Vec::new(),
    )
    .await;
    let deleted = stored_message(
        app,
        "acme",
        "Scan ready",
        over_smtp(None, Some(gone_connector_id), "192.0.2.7"),
        Vec::new(),
    )
    .await;
    let attached = stored_message(
        app,
        "acme",
        "Monthly invoice",
        Origin::Api,
        vec![
            Attachment {
                filename: "invoice-2026-11.pdf".into(),
                content_type: "application/pdf".into(),
                content_id: None,
                content: vec![b'%'; 14_540],
            },
            Attachment {
                filename: "logo.png".into(),
                content_type: "image/png".into(),
                content_id: Some("logo@acme".into()),
                content: vec![0; 812],
            },
        ],
    )
    .await;
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/acme/smtp-credentials/{gone_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/acme/smtp-connectors/{gone_connector_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, monitoring) = app.get("/v1/tenants/acme/smtp-credentials", OPERATOR).await;
    let username = monitoring[0]["username"].as_str().unwrap().to_owned();

    // A member reads messages too: the list marks SMTP mail, and only that.
    let member = HttpSession::sign_in(app, "mel@acme.example", MEMBER_PASSWORD, "/t/acme").await;
    let html = member.get_html("/t/acme/messages").await;
    let row = |subject: &str| {
        let at = html
            .find(&format!(">{subject}</a>"))
            .unwrap_or_else(|| panic!("{subject}: {html}"));
        html[at..].split("</tr>").next().unwrap().to_owned()
    };
    for subject in [
        "Grafana alert",
        "Printer out of toner",
        "Build broken",
        "Scan ready",
    ] {
        assert!(
            row(subject).contains("SMTP</span>"),
            "{subject}: {}",
            row(subject)
        );
    }
    for subject in ["Monthly invoice", "Quarterly report"] {
        assert!(
            !row(subject).contains("SMTP"),
            "{subject}: {}",
            row(subject)
        );
    }

    let source = |html: &str| {
        let at = html.find("id=\"message-source\">").expect("the source") + 20;
        unescaped(
            &html[at..]
                .split("</dd>")
                .next()
                .unwrap()
                .replace("<code>", "")
                .replace("</code>", ""),
        )
    };
    for (id, says) in [
        (
            &credential,
            format!(
                "Received over SMTP from 10.1.2.3, authenticated as credential monitoring ({username})"
            ),
        ),
        (
            &connector,
            "Received over SMTP from 198.51.100.20, by connector office printers".to_owned(),
        ),
        (
            &revoked,
            "Received over SMTP from 2001:db8::25, authenticated as a credential since revoked"
                .to_owned(),
        ),
        (
            &deleted,
            "Received over SMTP from 192.0.2.7, by a connector since deleted".to_owned(),
        ),
    ] {
        let html = member.get_html(&format!("/t/acme/messages/{id}")).await;
        assert_eq!(source(&html), says, "{html}");
        assert!(!html.contains("id=\"attachments\""), "{html}");
    }
    let (_, api) = app
        .get(&format!("/v1/tenants/acme/messages/{credential}"), OPERATOR)
        .await;
    assert_eq!(api["source"], "smtp", "{api}");

    // API mail says nothing of SMTP, and lists its attachments.
    let Page { html, .. } = member.get(&format!("/t/acme/messages/{attached}")).await;
    assert!(
        !html.contains("message-source") && html.contains("id=\"attachments\""),
        "{html}"
    );
    let text = unescaped(&html);
    for shown in [
        "<td>invoice-2026-11.pdf</td>",
        "<code>application/pdf</code>",
        "<td>14.2 KiB</td>",
        "logo.png<span class=\"sub\">inline, <code>cid:logo@acme</code></span>",
        "<td>812 bytes</td>",
    ] {
        assert!(text.contains(shown), "{shown}: {text}");
    }
    let Page { html, .. } = member
        .get(&format!("/t/acme/messages/{}", c.message_id))
        .await;
    assert!(!html.contains("message-source") && !html.contains("id=\"attachments\""));
}
