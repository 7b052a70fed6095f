//! The egress guard made visible: saving an SMTP server whose host the guard
//! refuses answers a warning naming the rule (API and console), and the
//! delivery the guard refuses names the same rule.

use herald_smtp::Egress;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console_http::{HttpSession, csrf_field, give_password};
use crate::helpers::*;

const LOOPBACK: &str =
    "loopback addresses are refused; the operator may allow them with --egress-allow";

/// A node with the built-in egress rules only: loopback is refused.
async fn guarded_app() -> TestApp {
    spawn_app_with(|s| s.egress = Egress::default()).await
}

/// A server entry for `host`, port 25 without TLS.
fn entry(name: &str, host: &str) -> Value {
    json!({"name": name, "host": host, "port": 25, "security": "none"})
}

/// The `egress_refused` warnings of a server answer.
fn egress_warnings(server: &Value) -> Vec<String> {
    server_warnings(server)
        .into_iter()
        .filter(|(code, _)| code == "egress_refused")
        .map(|(_, message)| message)
        .collect()
}

/// The one `egress_refused` warning of a server answer.
fn the_egress_warning(server: &Value) -> String {
    let said = egress_warnings(server);
    assert_eq!(said.len(), 1, "{server}");
    said[0].clone()
}

#[tokio::test]
async fn saving_a_server_the_guard_refuses_answers_a_warning_naming_the_rule() {
    let app = guarded_app().await;
    let acme = app.tenant("acme").await;

    // An address: judged at once. The server is saved all the same.
    let literal = app
        .create_smtp_server(&acme, entry("local", "127.0.0.1"))
        .await;
    let said = the_egress_warning(&literal);
    assert!(
        said.starts_with("127.0.0.1 is an address") && said.ends_with(LOOPBACK),
        "{said}"
    );

    // A name: judged on what it resolves to.
    let named = app
        .create_smtp_server(&acme, entry("named", "localhost"))
        .await;
    let said = the_egress_warning(&named);
    assert!(
        said.starts_with("localhost resolves only to addresses") && said.ends_with(LOOPBACK),
        "{said}"
    );

    // A private address is allowed, and a name that does not resolve gives no warning.
    let server = format!("smtp-servers/{}", literal["id"].as_str().unwrap());
    for host in ["10.0.0.25", "relay.herald-test.invalid"] {
        let (status, changed) = app
            .patch_as_admin(&acme, &server, json!({"host": host}))
            .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert!(egress_warnings(&changed).is_empty(), "{host}: {changed}");
    }
    // A change back to a refused address warns again, with the rule of the range.
    let (status, metadata) = app
        .patch_as_admin(&acme, &server, json!({"host": "169.254.169.254"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{metadata}");
    let said = egress_warnings(&metadata);
    assert!(
        said.len() == 1 && said[0].contains("link-local addresses are refused"),
        "{metadata}"
    );

    // Where the operator allows loopback, nothing is said.
    let allowing = spawn_app().await;
    let other = allowing.tenant("acme").await;
    let allowed = allowing
        .create_smtp_server(&other, entry("local", "127.0.0.1"))
        .await;
    assert!(egress_warnings(&allowed).is_empty(), "{allowed}");
}

const PASSWORD: &str = "admin console password";

/// The page at `path`, which must answer 200.
async fn shown(session: &HttpSession, path: &str) -> String {
    let page = session.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{path}");
    page.html
}

#[tokio::test]
async fn the_console_shows_the_warning_after_saving() {
    let app = guarded_app().await;
    app.tenant("acme").await;
    give_password(&app, "acme", "admin@acme.example", PASSWORD).await;
    // Signing in lands on the new server form, whose CSRF token the first post carries.
    let mut admin =
        HttpSession::sign_in(&app, "admin@acme.example", PASSWORD, "/t/acme/servers/new").await;
    let server = |host: &'static str| {
        [
            ("name", "local"),
            ("host", host),
            ("port", "25"),
            ("security", "none"),
        ]
    };
    let saved = admin.post("/t/acme/servers", &server("127.0.0.1")).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let page = shown(&admin, &saved.location).await;
    assert!(
        page.contains("127.0.0.1 is an address this installation") && page.contains(LOOPBACK),
        "{page}"
    );

    // Saving the same server with an allowed address says nothing of the guard.
    admin.csrf = csrf_field(&page);
    let changed = admin
        .post(
            saved.location.split('?').next().unwrap(),
            &server("10.0.0.25"),
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER);
    let page = shown(&admin, &changed.location).await;
    assert!(!page.contains("egress policy"), "{page}");
    // An address is judged anew when the page is shown: a link claiming a
    // refusal for an allowed address shows none.
    let claimed = format!(
        "{}?done=server-saved&egress=loopback",
        changed.location.split('?').next().unwrap()
    );
    let page = shown(&admin, &claimed).await;
    assert!(!page.contains("egress policy"), "{page}");

    // A name is resolved once, when it is saved: the redirect carries the
    // rule, and showing the page resolves nothing again.
    admin.csrf = csrf_field(&page);
    let named = admin
        .post(
            changed.location.split('?').next().unwrap(),
            &server("localhost"),
        )
        .await;
    assert_eq!(named.status, StatusCode::SEE_OTHER);
    assert!(
        named.location.contains("egress=loopback"),
        "{}",
        named.location
    );
    let page = shown(&admin, &named.location).await;
    assert!(
        page.contains("localhost resolves only to addresses") && page.contains(LOOPBACK),
        "{page}"
    );
}

#[tokio::test]
async fn the_refused_delivery_names_the_same_rule() {
    let app = guarded_app().await;
    let acme = app.tenant("acme").await;
    app.configure(&acme, entry("local", "127.0.0.1"), None)
        .await;
    let (_, providers) = app.get("/v1/tenants/acme/providers", &acme.admin).await;
    let provider = providers[0]["id"].as_str().unwrap();
    let (status, test) = app
        .post(
            &format!("/v1/tenants/acme/providers/{provider}/test"),
            &acme.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    let id = test["message_id"].as_str().unwrap();
    let message = app.wait_for_status(&acme, id, "failed").await;
    let attempt = &message["recipients"][0]["attempts"][0];
    let response = attempt["response"].as_str().unwrap();
    assert!(
        response.contains("not allowed by this installation's egress policy")
            && response.ends_with(LOOPBACK),
        "{attempt}"
    );
    assert!(attempt["remote_addr"].is_null(), "nothing was connected to");
}
