//! The console read and filled in without a browser, over plain HTTP: unknown
//! URLs answer an HTML page with a way back, the server and account forms say
//! and store only what applies, the audit log names people and objects, and a
//! server that offers no AUTH gets a diagnosis in plain words.

use herald_testsmtp::TestSmtpServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::console_http::{HttpSession, Page, give_password};
use crate::helpers::{OPERATOR, TestApp, TestTenant, app_with_acme};

const ADMIN_PASSWORD: &str = "reading-admin-password";
const MEMBER_PASSWORD: &str = "reading-member-password";

/// Creates a person (or finds the one with this address) and sets their
/// console password through the API; returns their id.
async fn person_with_password(
    app: &TestApp,
    slug: &str,
    name: &str,
    email: &str,
    role: &str,
    password: &str,
) -> String {
    let (_, persons) = app
        .get(&format!("/v1/tenants/{slug}/persons"), OPERATOR)
        .await;
    if !persons
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["email"] == email)
    {
        let (status, person) = app
            .post(
                &format!("/v1/tenants/{slug}/persons"),
                OPERATOR,
                json!({"name": name, "email": email, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{person}");
    }
    give_password(app, slug, email, password).await
}

/// The id of the person with this address in acme.
async fn person_id(app: &TestApp, email: &str) -> String {
    let (_, persons) = app.get("/v1/tenants/acme/persons", OPERATOR).await;
    persons
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == email)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .unwrap()
}

/// A node with tenant acme whose administrator (Admin) is signed in.
async fn acme_admin() -> (TestApp, TestTenant, HttpSession) {
    let (app, acme) = app_with_acme().await;
    app.grant_credential_storage("acme").await;
    let admin = signed_in(
        &app,
        "Admin",
        "admin@acme.example",
        "tenant_admin",
        ADMIN_PASSWORD,
    )
    .await;
    (app, acme, admin)
}

/// A person of acme with a console password (made if missing), signed in on
/// the dashboard.
async fn signed_in(
    app: &TestApp,
    name: &str,
    email: &str,
    role: &str,
    password: &str,
) -> HttpSession {
    person_with_password(app, "acme", name, email, role, password).await;
    HttpSession::sign_in(app, email, password, "/t/acme").await
}

/// A console error page: HTML, with the way back to the dashboard.
fn assert_html_page_with_a_way_back(page: &Page, status: StatusCode, what: &str) {
    assert_eq!(page.status, status, "{what}: {}", page.html);
    assert!(
        page.content_type.starts_with("text/html"),
        "{what} answers {}: {}",
        page.content_type,
        page.html
    );
    assert!(
        page.html.contains("<a href=\"/\">Go to the dashboard</a>"),
        "{what}: {}",
        page.html
    );
}

#[tokio::test]
async fn unknown_console_urls_answer_an_html_page_with_a_way_back_and_the_api_keeps_json() {
    let (app, _acme, admin) = acme_admin().await;
    for path in [
        "/t/acme/no-such-page",
        "/t/acme/servers/new/extra",
        "/operator/nothing",
        "/static/nothing.js",
        "/no-such-thing",
    ] {
        let page = admin.get(path).await;
        assert_html_page_with_a_way_back(&page, StatusCode::NOT_FOUND, path);
        assert!(page.html.contains("Not found"), "{path}: {}", page.html);
        // The page is the console's: its headers forbid framing and caching.
        let anonymous = Page::from(
            app.client
                .get(format!("{}{path}", app.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_html_page_with_a_way_back(&anonymous, StatusCode::NOT_FOUND, path);
        assert!(
            anonymous.html.contains("<a href=\"/sign-in\">Sign in</a>"),
            "{path}: {}",
            anonymous.html
        );
    }
    // A form's action visited with GET is a page as well.
    let page = admin.get("/t/acme/servers/x/delete").await;
    assert_html_page_with_a_way_back(&page, StatusCode::METHOD_NOT_ALLOWED, "GET of a POST route");
    // The console's own 404 (another tenant's page) and 403 (a member on an
    // administrator's page) are HTML with the way back as well.
    app.tenant("globex").await;
    let page = admin.get("/t/globex/servers").await;
    assert_html_page_with_a_way_back(&page, StatusCode::NOT_FOUND, "another tenant");
    let member = signed_in(&app, "Mel", "mel@acme.example", "member", MEMBER_PASSWORD).await;
    let page = member.get("/t/acme/audit").await;
    assert_html_page_with_a_way_back(&page, StatusCode::FORBIDDEN, "a member on the audit log");

    // The API's unknown URLs answer its JSON problem, with or without a token.
    for path in ["/v1/no-such-route", "/v1/tenants/acme/nothing/here"] {
        let answer = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
        let kind = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.contains("json"), "{path} answers {kind}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], 404, "{body}");
    }
}

/// Adds an SMTP server through the console's form; its id.
async fn add_server(admin: &HttpSession, name: &str, host: &str, port: &str) -> String {
    let fields = [("name", name), ("host", host), ("port", port)];
    server_id_of(&admin.post("/t/acme/servers", &fields).await)
}

/// The id of the server the console's POST redirected to.
fn server_id_of(page: &Page) -> String {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    let path = page.location.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_server_without_tls_stores_and_shows_no_certificate_verification() {
    let (app, _acme, admin) = acme_admin().await;
    // A preset's example host is a placeholder, never a value.
    let page = admin.get("/t/acme/servers/new?preset=gateway-relay").await;
    assert!(
        page.html.contains(r#"name="host" type="text" value="""#)
            && page
                .html
                .contains(r#"placeholder="relay.example.internal""#),
        "{}",
        page.html
    );

    // The box was left ticked (as a browser without scripts sends it): the
    // server stores and shows verification off.
    let created = admin
        .post(
            "/t/acme/servers",
            &[
                ("name", "relay"),
                ("host", "relay.acme.example"),
                ("port", "25"),
                ("security", "none"),
                ("tls_verify", "on"),
            ],
        )
        .await;
    let id = server_id_of(&created);
    let (_, server) = app
        .get(&format!("/v1/tenants/acme/smtp-servers/{id}"), OPERATOR)
        .await;
    assert_eq!(server["tls_verify"], false, "{server}");
    assert_eq!(server["warnings"], json!([]), "{server}");
    let form = admin.get(&format!("/t/acme/servers/{id}")).await;
    let checkbox = form
        .html
        .split("id=\"f-tls_verify\"")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap();
    assert!(!checkbox.contains("checked"), "{}", form.html);
    let list = admin.get("/t/acme/servers").await;
    let row = list.html.split(">relay</a>").nth(1).unwrap();
    let row = row.split("</tr>").next().unwrap();
    assert!(
        row.contains("does not apply (no TLS)") && !row.contains(">on<"),
        "{row}"
    );

    // Through the API too: asked for, it is still off without TLS, and
    // choosing TLS later without a word turns it back on.
    let (status, api) = app
        .post(
            "/v1/tenants/acme/smtp-servers",
            OPERATOR,
            json!({"name": "plain", "host": "plain.acme.example", "port": 25,
                   "security": "none", "tls_verify": true, "requires_auth": true,
                   "allow_plaintext_auth": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{api}");
    assert_eq!(api["tls_verify"], false, "{api}");
    let api_id = api["id"].as_str().unwrap();
    let (status, account) = app
        .post(
            &format!("/v1/tenants/acme/smtp-servers/{api_id}/accounts"),
            OPERATOR,
            json!({"username": "u", "password": "a-password-1", "person_id": person_id(&app, "admin@acme.example").await}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    // Saving the same server again (the box meaningless, so sent or not)
    // does not weaken trust and keeps the account's password.
    let (status, same) = app
        .call(
            Method::PATCH,
            &format!("/v1/tenants/acme/smtp-servers/{api_id}"),
            Some(OPERATOR),
            Some(json!({"tls_verify": true, "name": "plain"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["tls_verify"], false, "{same}");
    let (_, kept) = app
        .get(
            &format!(
                "/v1/tenants/acme/smtp-servers/{api_id}/accounts/{}",
                account["id"].as_str().unwrap()
            ),
            OPERATOR,
        )
        .await;
    assert_eq!(kept["secret_set"], true, "{kept}");
    let (status, tls) = app
        .call(
            Method::PATCH,
            &format!("/v1/tenants/acme/smtp-servers/{api_id}"),
            Some(OPERATOR),
            Some(json!({"security": "starttls"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tls}");
    assert_eq!(tls["tls_verify"], true, "{tls}");
}

#[tokio::test]
async fn the_account_form_keeps_to_the_chosen_mechanism_and_names_each_mailbox_once() {
    let (app, _acme, admin) = acme_admin().await;
    let bea = person_with_password(
        &app,
        "acme",
        "Bea Admin",
        "bea@acme.example",
        "tenant_admin",
        "bea-console-password",
    )
    .await;
    let id = add_server(&admin, "exchange", "mail.acme.example", "587").await;
    let page = admin.get(&format!("/t/acme/servers/{id}")).await;
    // The mechanisms' fields in their own groups, each saying what it is for.
    assert!(
        page.html.contains("class=\"mechanism for-password wide\"")
            && page.html.contains("class=\"mechanism for-xoauth2 wide\""),
        "{}",
        page.html
    );
    // Every person once, the signed-in one marked and chosen; what it means said.
    let select = page
        .html
        .split("id=\"f-person_id\"")
        .nth(1)
        .unwrap()
        .split("</select>")
        .next()
        .unwrap();
    assert_eq!(select.matches("<option").count(), 2, "{select}");
    assert_eq!(select.matches("admin@acme.example").count(), 1, "{select}");
    assert_eq!(select.matches("bea@acme.example").count(), 1, "{select}");
    assert!(!select.contains(">Me<"), "{select}");
    assert!(
        select.contains("selected>Admin &lt;admin@acme.example&gt; (you)"),
        "{select}"
    );
    assert!(
        page.html
            .contains("The person whose mailbox this account is"),
        "{}",
        page.html
    );

    // PLAIN with XOAUTH2 fields typed as well: only the password is stored.
    let added = admin
        .post(
            &format!("/t/acme/servers/{id}/accounts"),
            &[
                ("username", "ada@acme.example"),
                ("mechanism", "plain"),
                ("password", "a-password-2"),
                ("access_token", "a-token"),
                ("token_url", "https://login.acme.example/token"),
                ("client_id", "client"),
                ("client_secret", "a-client-secret"),
                ("person_id", &bea),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    // XOAUTH2 with a password typed as well: the password is not sent (the
    // API refuses a password for XOAUTH2), the token is.
    let added = admin
        .post(
            &format!("/t/acme/servers/{id}/accounts"),
            &[
                ("username", "bot@acme.example"),
                ("mechanism", "xoauth2"),
                ("password", "a-password-3"),
                ("access_token", "an-access-token"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    let (_, accounts) = app
        .get(
            &format!("/v1/tenants/acme/smtp-servers/{id}/accounts"),
            OPERATOR,
        )
        .await;
    let accounts = accounts.as_array().unwrap();
    let plain = accounts
        .iter()
        .find(|a| a["username"] == "ada@acme.example")
        .unwrap();
    assert_eq!(plain["mechanism"], "plain");
    assert_eq!(plain["secret_set"], true);
    assert!(plain.get("oauth2").is_none(), "{plain}");
    assert_eq!(plain["person_id"], bea.as_str());
    let token = accounts
        .iter()
        .find(|a| a["username"] == "bot@acme.example")
        .unwrap();
    assert_eq!(token["mechanism"], "xoauth2");
    assert_eq!(token["secret_set"], true);
    // The accounts table says whose mailbox each is.
    let page = admin.get(&format!("/t/acme/servers/{id}")).await;
    let table = page.html.split("<h3>Add an account</h3>").next().unwrap();
    assert!(
        table.contains("<td>Bea Admin</td>") && table.contains("<td>Admin</td>"),
        "{table}"
    );
}

/// Creates SMTP server `name` of acme over the API with `token`; the row of
/// the audit page that records it.
async fn audit_row_of_server_made_with(
    app: &TestApp,
    admin: &HttpSession,
    token: &str,
    name: &str,
) -> String {
    let (status, made) = app
        .post(
            "/v1/tenants/acme/smtp-servers",
            token,
            json!({"name": name, "host": format!("{name}.acme.example"), "port": 25}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let text = admin.get("/t/acme/audit").await.text();
    text.split("<tr>")
        .find(|r| r.contains(&format!(">{name}</a>")))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned()
}

#[tokio::test]
async fn the_audit_log_names_people_and_objects_and_keeps_ids_of_deleted_ones() {
    let (app, acme, admin) = acme_admin().await;
    let id = add_server(&admin, "exchange", "mail.acme.example", "587").await;
    let gone = add_server(&admin, "old-relay", "old.acme.example", "25").await;
    let deleted = admin
        .post(&format!("/t/acme/servers/{gone}/delete"), &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.html);

    let page = admin.get("/t/acme/audit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let text = page.text();
    let rows: Vec<&str> = text.split("<tr>").skip(2).collect();
    let row_of = |action: &str, object: &str| {
        rows.iter()
            .find(|r| r.contains(&format!("<td>{action}</td>")) && r.contains(object))
            .unwrap_or_else(|| panic!("no {action} of {object}: {text}"))
            .to_string()
    };
    // The living server by name, linked, its id beside; the person by name,
    // the session they acted through beside, the raw actor in the tooltip.
    let created = row_of("smtp_server.create", &id);
    assert!(
        created.contains(&format!(
            "<a href=\"/t/acme/servers/{id}\" title=\"{id}\">exchange</a>"
        )),
        "{created}"
    );
    assert!(created.contains(">Admin</span>"), "{created}");
    assert!(created.contains("in the console"), "{created}");
    assert!(
        created.contains("console session"),
        "the actor in the tooltip: {created}"
    );
    assert!(!created.contains("<td>tenant_admin token"), "{created}");
    let removed = row_of("smtp_server.delete", &gone);
    // The deleted one by the name the log recorded, said to be deleted, its id beside.
    assert!(
        removed.contains(&format!(
            "old-relay<span class=\"sub\">deleted <code>{gone}</code></span>"
        )),
        "{removed}"
    );
    assert!(!removed.contains("<a href"), "{removed}");
    // Times are <time> elements: readable UTC with its age, ISO in the tooltip.
    assert!(created.contains("<time datetime=\"20"), "{created}");
    assert!(created.contains(" UTC ("), "{created}");
    // The operator's changes (the credential storage grant) name the operator.
    let granted = row_of("entitlements.update", "acme</a>");
    assert!(
        granted.contains(">Operator</span>") && granted.contains("with the token \""),
        "{granted}"
    );
    // An entry made with the administrator's API token names its person too.
    let row = audit_row_of_server_made_with(&app, &admin, &acme.admin, "by-api").await;
    assert!(
        row.contains(">Admin</span>") && row.contains("with the token \"admin\""),
        "{row}"
    );
    // A token is known by its id, whatever its name: one named like a
    // console session is still that token, not the console.
    let admin_id = person_id(&app, "admin@acme.example").await;
    let token = app
        .create_as_admin(
            &acme,
            "tokens",
            json!({"name": "console session", "role": "tenant_admin", "person_id": admin_id}),
        )
        .await;
    let token = token["token"].as_str().unwrap();
    let row = audit_row_of_server_made_with(&app, &admin, token, "by-named-token").await;
    assert!(
        row.contains("with the token \"console session\"") && !row.contains("in the console"),
        "{row}"
    );
}

#[tokio::test]
async fn a_server_that_offers_no_auth_is_diagnosed_in_plain_words() {
    // The project's test SMTP server offers no AUTH unless told to.
    let smtp = TestSmtpServer::start().await;
    let (app, acme, admin) = acme_admin().await;
    app.configure(
        &acme,
        json!({"name": "no-auth", "host": "127.0.0.1", "port": smtp.port(), "security": "none",
               "requires_auth": true, "allow_plaintext_auth": true}),
        Some(json!({"username": "herald@acme.example", "password": "smtp-password-1"})),
    )
    .await;
    let (_, providers) = app.get("/v1/tenants/acme/providers", &acme.admin).await;
    let provider = providers[0]["id"].as_str().unwrap().to_owned();
    let sent = admin
        .post(&format!("/t/acme/providers/{provider}/test"), &[])
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.html);
    let test = sent.location.rsplit('/').next().unwrap().to_owned();
    app.wait_for_attempts(&acme, &test, 1).await;

    let page = admin.get(&format!("/t/acme/tests/{test}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let html = &page.html;
    assert!(
        html.contains("the server offers no authentication at all"),
        "{html}"
    );
    assert!(
        page.text()
            .contains("turn off \"requires authentication\" (requires_auth) on the server entry"),
        "{html}"
    );
    assert!(
        !html.contains("offered: ;") && !html.contains("offered: <"),
        "{html}"
    );
    // No warning that a password travels in clear: none was sent.
    assert!(!html.contains("travels in clear"), "{html}");
    // Herald's own finding is not passed off as the server's words.
    assert!(
        html.contains("What Herald found (not the server's words)"),
        "{html}"
    );
    assert!(!html.contains("The server's reply"), "{html}");
    // Nothing was tried: no AUTH command reached the server.
    assert!(!smtp.commands().iter().any(|c| c.starts_with("AUTH")));
}

#[tokio::test]
async fn a_confirmation_says_only_what_is_stored_and_a_strange_query_is_no_error() {
    let (app, acme, admin) = acme_admin().await;
    // A repeated or unknown `done` is ignored: the page, not an error.
    for query in [
        "done=x&done=y",
        "done=%ZZ",
        "done=person-added&done=person-added",
    ] {
        let page = admin.get(&format!("/t/acme/persons?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.html);
        assert!(
            page.html.contains("<h1>Persons</h1>"),
            "{query}: {}",
            page.html
        );
    }
    // "It is the tenant's provider now" only when it is.
    let server = app
        .create_smtp_server(
            &acme,
            json!({"name": "relay", "host": "relay.acme.example", "port": 587}),
        )
        .await;
    let provider = app
        .create_as_admin(
            &acme,
            "providers",
            json!({"name": "relay", "smtp_server_id": server["id"], "from_address": "alerts@acme.example"}),
        )
        .await;
    let id = provider["id"].as_str().unwrap();
    let page = admin
        .get(&format!("/t/acme/providers/{id}?done=provider-chosen"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(!page.html.contains("provider now"), "{}", page.html);
    app.activate_provider(&acme, &provider["id"]).await;
    let page = admin
        .get(&format!("/t/acme/providers/{id}?done=provider-chosen"))
        .await;
    assert!(page.html.contains("provider now"), "{}", page.html);
}

/// The message list is a page at a time, newest first, its filters kept on
/// the link to older messages; the last page has no such link.
#[tokio::test]
async fn the_message_list_pages_through_a_long_history_keeping_its_filters() {
    let (app, acme, console) = acme_admin().await;
    let messages: Vec<Value> = (0..105)
        .map(|i| json!({"to": ["ops@acme.example"], "subject": format!("alert {i:03}"), "text": "x"}))
        .collect();
    let (status, body) = app
        .post(
            "/v1/tenants/acme/messages/batch",
            &acme.sender,
            json!({ "messages": messages }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 105, "{body}");

    let first = console
        .get("/t/acme/messages?recipient=ops%40acme.example")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let rows = |html: &str| html.matches("<tr>").count() - 1;
    assert_eq!(rows(&first.html), 100, "a page holds 100");
    assert!(first.html.contains("alert 104") && !first.html.contains("alert 004"));
    let link = first
        .html
        .split("href=\"")
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split('"').next())
        .expect("a link to older messages")
        .replace("&amp;", "&");
    assert!(link.contains("recipient=ops%40acme.example"), "{link}");
    let second = console.get(&link).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(rows(&second.html), 5);
    assert!(second.html.contains("alert 000") && !second.html.contains("alert 005"));
    assert!(
        !second.html.contains("rel=\"next\""),
        "the last page links no further"
    );
}
