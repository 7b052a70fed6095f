//! The console's gateways page over plain HTTP: a gateway created through
//! its form (its token and the command that starts it shown once), a new
//! token, its instances as they report, an SMTP server pinned to it through
//! the server's form, deletion refused while it is pinned and done once
//! unpinned, and who may use the pages.

use herald_store::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;

use crate::console::{
    ADA_PASSWORD, GLOBEX_PASSWORD, console_with_two_tenants, heading, member_is_refused, unescaped,
};
use crate::console_http::{HttpSession, Page, listed, shown_value};
use crate::console_smtp::node_store;
use crate::gateways::instance_seen;
use crate::helpers::{OPERATOR, TestApp};

const GATEWAYS: &str = "/t/acme/gateways";

/// A server of acme's, as the API shows it.
async fn server(app: &TestApp, id: &str) -> Value {
    let (status, server) = app
        .get(&format!("/v1/tenants/acme/smtp-servers/{id}"), OPERATOR)
        .await;
    assert_eq!(status, StatusCode::OK, "{server}");
    server
}

/// The fields of the server form, with this gateway chosen (empty for none).
fn server_fields<'a>(name: &'a str, gateway_id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("host", "relay.acme.internal"),
        ("port", "25"),
        ("security", "starttls"),
        ("tls_verify", "on"),
        ("gateway_id", gateway_id),
    ]
}

/// A tenant administrator's gateway, from its form to its deletion.
#[tokio::test]
async fn a_tenant_administrator_manages_gateways_in_the_console() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, GATEWAYS).await;

    // The page is in the navigation, and says what a gateway is for.
    let page = admin.get(GATEWAYS).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let text = page.text();
    assert!(
        text.contains("<a href=\"/t/acme/gateways\" aria-current=\"page\">Gateways</a>"),
        "{text}"
    );
    assert!(
        text.contains("delivers its mail from inside it") && text.contains("No gateway yet"),
        "{text}"
    );

    // A name is required: the error beside the field.
    let Page { status, html, .. } = admin.post(GATEWAYS, &[("name", " ")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"e-name\""), "{html}");
    assert!(listed(app, "gateways").await.is_empty());

    // Created: the token and the command that starts it, once.
    let created = admin.post(GATEWAYS, &[("name", "berlin")]).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.html);
    assert_eq!(heading(&created.html), Some("Gateway berlin created"));
    assert!(
        created.html.contains("this is the only time it is shown"),
        "{}",
        created.html
    );
    let token = shown_value(&created.html, "gateway-token");
    assert!(token.starts_with("hrldg_"), "{token}");
    let host = app.base.strip_prefix("http://").unwrap();
    assert_eq!(
        shown_value(&created.html, "gateway-command"),
        format!("herald gateway --server https://{host} --token {token} --name berlin-1")
    );
    let all = listed(app, "gateways").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "berlin");
    assert!(!Value::Array(all.clone()).to_string().contains(&token));
    let id = all[0]["id"].as_str().unwrap().to_owned();
    let first_token_at = all[0]["token_created_at"].clone();

    // Never shown again: the list has the gateway, not its token.
    let text = admin.get(GATEWAYS).await.text();
    assert!(text.contains("<h3 id=\"gateway-"), "{text}");
    assert!(text.contains(">berlin</h3>") && text.contains("No instance has reported yet"));
    assert!(!text.contains(&token) && !text.contains("hrldg_"), "{text}");
    // Its instances once they report: alive or not, with the last hour's counts.
    // They report to the node's store directly: what is tested is the page.
    let store = node_store(app);
    let now = herald_core::timestamp::now_ms();
    for (name, at) in [("berlin-1", now), ("berlin-2", now - 24 * 3_600_000)] {
        instance_seen(app, &id, name, "1.4.2", at).await;
    }
    store
        .count_gateway_outcomes(id.parse().unwrap(), "berlin-1", 5, 2, now)
        .await
        .unwrap();
    let text = admin.get(GATEWAYS).await.text();
    let row = |name: &str| {
        let start = text
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| panic!("no row {name}: {text}"));
        text[start..start + text[start..].find("</tr>").unwrap()].to_owned()
    };
    let fresh = row("berlin-1");
    for shown in [
        "<td>1.4.2</td>",
        "<code>192.0.2.7</code>",
        "(just now)</time>",
        "<span class=\"badge\">yes</span>",
        "<td>5</td>",
        "<td>2</td>",
    ] {
        assert!(fresh.contains(shown), "{shown} in {fresh}");
    }
    let old = row("berlin-2");
    assert!(
        old.contains("(24 h ago)</time>") && old.contains("<span class=\"badge off\">no</span>"),
        "{old}"
    );
    assert!(!text.contains("No instance has reported yet"), "{text}");

    // A second gateway of the same name is refused, said above the form.
    let html = admin
        .post_answered(GATEWAYS, &[("name", "berlin")], StatusCode::CONFLICT)
        .await;
    assert!(html.contains("role=\"alert\""), "{html}");

    // A new token asks first, then is shown once; the old one is gone.
    let new_token = format!("{GATEWAYS}/{id}/token");
    let html = admin.get_html(&new_token).await;
    assert_eq!(heading(&html), Some("Give the gateway berlin a new token?"));
    let replaced = admin.post(&new_token, &[]).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.html);
    assert_eq!(
        heading(&replaced.html),
        Some("New token for the gateway berlin")
    );
    assert!(replaced.html.contains("The previous token stopped working"));
    let second = shown_value(&replaced.html, "gateway-token");
    assert!(second.starts_with("hrldg_") && second != token, "{second}");
    assert!(shown_value(&replaced.html, "gateway-command").contains(&format!("--token {second} ")));
    let all = listed(app, "gateways").await;
    assert_ne!(all[0]["token_created_at"], first_token_at);
    let text = admin.get(GATEWAYS).await.text();
    assert!(!text.contains(&second), "{text}");

    // The server form offers the gateway; a server pinned to it says so.
    let Page { html, .. } = admin.get("/t/acme/servers/new").await;
    let text = unescaped(&html);
    assert!(
        text.contains("<option value=\"\">None: Herald's nodes deliver</option>")
            && text.contains(&format!("<option value=\"{id}\">berlin</option>")),
        "{text}"
    );
    let Page {
        status, location, ..
    } = admin
        .post("/t/acme/servers", &server_fields("office relay", ""))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let server_id = location
        .strip_prefix("/t/acme/servers/")
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned();
    assert!(server(app, &server_id).await["gateway_id"].is_null());
    let server_page = format!("/t/acme/servers/{server_id}");
    let Page {
        status, location, ..
    } = admin
        .post(&server_page, &server_fields("office relay", &id))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    assert_eq!(server(app, &server_id).await["gateway_id"], id.as_str());
    let text = unescaped(&admin.get(&server_page).await.html);
    assert!(
        text.contains("Delivered by the gateway <strong>berlin</strong>"),
        "{text}"
    );
    assert!(
        text.contains(&format!("<option value=\"{id}\" selected>berlin</option>")),
        "{text}"
    );
    let text = admin.get("/t/acme/servers").await.text();
    assert!(text.contains("<td>gateway berlin</td>"), "{text}");

    // Deleting asks first; refused while the server is pinned, saying which.
    let delete = format!("{GATEWAYS}/{id}/delete");
    let html = admin.get_html(&delete).await;
    assert_eq!(heading(&html), Some("Delete the gateway berlin?"));
    let refused = admin.post(&delete, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.html);
    assert!(
        refused.text().contains("office relay") && refused.html.contains("role=\"alert\""),
        "{}",
        refused.html
    );
    assert_eq!(listed(app, "gateways").await.len(), 1);

    // Unpinned through the form ("None"), then deleted.
    let Page { status, .. } = admin
        .post(&server_page, &server_fields("office relay", ""))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(server(app, &server_id).await["gateway_id"].is_null());
    let text = admin.get("/t/acme/servers").await.text();
    assert!(!text.contains("gateway berlin"), "{text}");
    let Page { html, .. } = admin
        .post_redirected(&delete, &[], &format!("{GATEWAYS}?done=gateway-deleted"))
        .await;
    assert!(html.contains("Gateway deleted"), "{html}");
    assert!(listed(app, "gateways").await.is_empty());
    assert_eq!(admin.get(&delete).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        admin.post(&new_token, &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

/// The pages and forms are a tenant administrator's: acme's member is
/// refused (403) and has no link to them, another tenant's administrator is
/// told acme's gateway does not exist (404); none of them changes anything.
#[tokio::test]
async fn only_the_tenant_s_administrators_manage_its_gateways() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, GATEWAYS).await;
    admin
        .post_answered(GATEWAYS, &[("name", "berlin")], StatusCode::OK)
        .await;
    let before = listed(app, "gateways").await;
    let id = before[0]["id"].as_str().unwrap().to_owned();
    let pages = [
        GATEWAYS.to_owned(),
        format!("{GATEWAYS}/{id}/token"),
        format!("{GATEWAYS}/{id}/delete"),
    ];
    let forms = [
        (GATEWAYS.to_owned(), vec![("name", "munich")]),
        (format!("{GATEWAYS}/{id}/token"), vec![]),
        (format!("{GATEWAYS}/{id}/delete"), vec![]),
    ];

    let (_, refusals) = member_is_refused(app, &pages, &forms, &[GATEWAYS]).await;
    for html in refusals {
        assert!(!html.contains("hrldg_"), "{html}");
    }

    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    for path in &pages {
        let Page { status, .. } = stranger.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
    }
    for (path, fields) in &forms {
        let Page { status, html, .. } = stranger.post(path, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
        assert!(!html.contains("hrldg_"), "{html}");
        // Acme's gateway through globex's own pages is not found either.
        if path != GATEWAYS {
            let theirs = path.replace("/t/acme/", "/t/globex/");
            let Page { status, .. } = stranger.post(&theirs, fields).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {theirs}");
        }
    }
    assert_eq!(listed(app, "gateways").await, before);
    // Globex's server form does not offer acme's gateway.
    let Page { html, .. } = stranger.get("/t/globex/servers/new").await;
    assert!(!html.contains(&id), "{html}");
}
