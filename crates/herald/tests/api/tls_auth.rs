//! Security modes and authentication against the test SMTP server: STARTTLS, implicit
//! TLS, trust settings, PLAIN, LOGIN and XOAUTH2 (stored and obtained by OAuth2).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::post;
use herald_testsmtp::{ServerConfig, TestSmtpServer, TestTls};
use serde_json::{Value, json};

use crate::helpers::*;

fn server(port: u16, security: &str) -> Value {
    json!({"name": "mx", "host": "127.0.0.1", "port": port, "security": security})
}

/// A server entry for 127.0.0.1:`port` that trusts `tls`'s CA.
fn trusted_server(port: u16, security: &str, tls: &TestTls) -> Value {
    let mut entry = server(port, security);
    entry["tls_ca_pem"] = tls.ca_pem().into();
    entry
}

async fn send_one(app: &TestApp, tenant: &TestTenant) -> String {
    app.submit(
        tenant,
        json!({"to": ["a@acme.example"], "subject": "Secure", "text": "x"}),
    )
    .await
}

/// A fresh node whose tenant `acme` sends through the server `entry`
/// describes (logging in with `account`), and the id of one message it submitted.
async fn one_message_through(
    entry: Value,
    account: Option<Value>,
) -> (TestApp, TestTenant, String) {
    let app = spawn_app().await;
    let acme = app.configured_tenant("acme", entry, account).await;
    let id = send_one(&app, &acme).await;
    (app, acme, id)
}

#[tokio::test]
async fn starttls_with_the_servers_ca_bundle_is_sent_encrypted() {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp =
        TestSmtpServer::start_with(ServerConfig::new().starttls(tls.clone()).require_tls()).await;
    let entry = trusted_server(smtp.port(), "starttls", &tls);
    let (app, acme, id) = one_message_through(entry, None).await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let attempt = first_attempt_of(&message);
    assert!(
        attempt["tls_version"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1."),
        "{attempt}"
    );
    assert!(!attempt["tls_cipher"].as_str().unwrap().is_empty());
    assert_eq!(attempt["remote_addr"], format!("127.0.0.1:{}", smtp.port()));
    assert!(smtp.messages()[0].tls);
}

#[tokio::test]
async fn implicit_tls_on_any_port() {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().implicit_tls(tls.clone())).await;
    let entry = trusted_server(smtp.port(), "tls", &tls);
    let (app, acme, id) = one_message_through(entry, None).await;
    app.wait_for_status(&acme, &id, "sent").await;
    assert!(smtp.wait_for_messages(1, DEADLINE).await[0].tls);
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_defers_and_nothing_goes_in_plaintext() {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().starttls(tls)).await;
    let (app, acme, id) = one_message_through(server(smtp.port(), "starttls"), None).await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["outcome"], "deferred", "{attempt}");
    assert_eq!(attempt["step"], "tls");
    assert!(
        attempt["response"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{attempt}"
    );
    assert!(
        !smtp.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        smtp.commands()
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn an_expired_certificate_defers() {
    let tls = TestTls::expired(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().implicit_tls(tls.clone())).await;
    let entry = trusted_server(smtp.port(), "tls", &tls);
    let (app, acme, id) = one_message_through(entry, None).await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(
        (attempt["outcome"].as_str(), attempt["step"].as_str()),
        (Some("deferred"), Some("tls")),
        "{attempt}"
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn starttls_required_but_not_offered_defers_without_plaintext() {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().starttls(tls).hide_starttls()).await;
    let (app, acme, id) = one_message_through(server(smtp.port(), "starttls"), None).await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["outcome"], "deferred");
    assert_eq!(attempt["step"], "starttls");
    assert!(
        attempt["response"]
            .as_str()
            .unwrap()
            .contains("does not offer STARTTLS"),
        "{attempt}"
    );
    assert!(
        !smtp
            .commands()
            .iter()
            .any(|c| c.starts_with("MAIL") || c.starts_with("STARTTLS"))
    );
}

#[tokio::test]
async fn the_name_override_verifies_an_ip_addressed_relay() {
    let tls = TestTls::generate(&["relay.acme.example"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().starttls(tls.clone())).await;
    let app = spawn_app().await;

    // Without the override the certificate does not match 127.0.0.1.
    let mut entry = trusted_server(smtp.port(), "starttls", &tls);
    let plain = app.configured_tenant("plain", entry.clone(), None).await;
    let id = send_one(&app, &plain).await;
    let message = app.wait_for_attempts(&plain, &id, 1).await;
    assert_eq!(
        message["recipients"][0]["attempts"][0]["step"], "tls",
        "{message}"
    );

    let acme = app.tenant("acme").await;
    entry["tls_server_name"] = "relay.acme.example".into();
    app.configure(&acme, entry, None).await;
    let id = send_one(&app, &acme).await;
    app.wait_for_status(&acme, &id, "sent").await;
}

#[tokio::test]
async fn verification_off_is_explicit_and_shown() {
    let tls = TestTls::generate(&["somewhere.else"]);
    let smtp = TestSmtpServer::start_with(ServerConfig::new().starttls(tls)).await;
    let (app, acme) = app_with_acme().await;
    let mut entry = server(smtp.port(), "starttls");
    entry["tls_verify"] = false.into();
    let created = app.configure(&acme, entry, None).await;
    assert_eq!(created["tls_verify"], false);

    let id = send_one(&app, &acme).await;
    app.wait_for_status(&acme, &id, "sent").await;
    assert!(smtp.messages()[0].tls);
}

#[tokio::test]
async fn plain_and_login_authenticate_with_the_stored_password() {
    for mechanism in ["plain", "login"] {
        let (tls, smtp) = starttls_server_with_auth("herald@acme.example", "s3cret-pw").await;
        let mut entry = trusted_server(smtp.port(), "starttls", &tls);
        entry["requires_auth"] = true.into();
        let account = json!({"username": "herald@acme.example", "password": "s3cret-pw", "mechanism": mechanism});
        let (app, acme, id) = one_message_through(entry, Some(account)).await;
        app.wait_for_status(&acme, &id, "sent").await;
        let received = smtp.wait_for_messages(1, DEADLINE).await;
        assert_eq!(
            received[0].authenticated_as.as_deref(),
            Some("herald@acme.example"),
            "{mechanism}"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_defers_with_the_servers_reason_and_no_secret() {
    let smtp = clear_auth_server("right-pw").await;
    let account = account_with("wrong-pw-123");
    let entry = clear_auth_entry(smtp.port(), true);
    let (app, acme, id) = one_message_through(entry, Some(account)).await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["outcome"], "deferred");
    assert_eq!(attempt["step"], "auth");
    assert_eq!(attempt["code"], 535);
    assert_eq!(attempt["enhanced_code"], "5.7.8");
    assert!(
        attempt["response"]
            .as_str()
            .unwrap()
            .contains("authentication credentials invalid"),
        "{attempt}"
    );
    assert!(!message.to_string().contains("wrong-pw-123"));
}

#[tokio::test]
async fn xoauth2_with_a_stored_access_token() {
    let smtp = TestSmtpServer::start_with(
        ServerConfig::new().xoauth2_token("herald@acme.example", "stored-token"),
    )
    .await;
    let account = json!({"username": "herald@acme.example", "mechanism": "xoauth2", "access_token": "stored-token"});
    let entry = clear_auth_entry(smtp.port(), true);
    let (app, acme, id) = one_message_through(entry, Some(account)).await;
    app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(
        smtp.messages()[0].authenticated_as.as_deref(),
        Some("herald@acme.example")
    );
}

/// A token endpoint that hands out `stale-token` first and `fresh-token` after.
async fn token_endpoint() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let forms = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, f) = (calls.clone(), forms.clone());
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| async move {
            f.lock().unwrap().push(body);
            let token = if c.fetch_add(1, Ordering::SeqCst) == 0 {
                "stale-token"
            } else {
                "fresh-token"
            };
            axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls, forms)
}

#[tokio::test]
async fn xoauth2_client_credentials_renew_a_rejected_token_once() {
    let (token_url, calls, forms) = token_endpoint().await;
    let smtp = TestSmtpServer::start_with(
        ServerConfig::new().xoauth2_token("herald@acme.example", "fresh-token"),
    )
    .await;
    let account = json!({
        "username": "herald@acme.example", "mechanism": "xoauth2",
        "oauth2": {"token_url": token_url, "client_id": "herald-app", "client_secret": "client-s3cret",
                   "scope": "https://outlook.office365.com/.default"}
    });
    let entry = clear_auth_entry(smtp.port(), true);
    let (app, acme, id) = one_message_through(entry, Some(account)).await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(attempts_of(&message).len(), 1, "{message}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one token, then one renewal"
    );
    let form = forms.lock().unwrap()[0].clone();
    assert!(
        form.contains("grant_type=client_credentials") && form.contains("client_id=herald-app"),
        "{form}"
    );

    // The renewed token is cached: the next message needs no new one.
    let id = send_one(&app, &acme).await;
    app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bytes_injected_after_starttls_are_discarded() {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start_with(
        ServerConfig::new()
            .starttls(tls.clone())
            .extra_after_starttls(),
    )
    .await;
    let entry = trusted_server(smtp.port(), "starttls", &tls);
    let (app, acme, id) = one_message_through(entry, None).await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    // Had the injected "250 injected" been read as the EHLO reply, every later reply would be off by one.
    assert!(
        message["recipients"][0]["attempts"][0]["response"]
            .as_str()
            .unwrap()
            .starts_with("250 2.0.0"),
        "{message}"
    );
    assert!(smtp.messages()[0].tls);
}
