//! The OAuth2 token endpoint under the egress guard (validated with a URL parser,
//! never redirected, never fetched for a forbidden SMTP server, and its refusals
//! reduced to the OAuth2 error code and HTTP status), and SMTP hosts spelt as numbers.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{StatusCode as AxumStatus, header};
use axum::response::IntoResponse;
use axum::routing::post;
use herald_smtp::Egress;
use herald_testsmtp::{ServerConfig, TestSmtpServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A loopback listener that never accepts: the kernel completes a client's
/// handshake anyway, so afterwards it tells whether anyone connected.
struct Untouched(std::net::TcpListener);

impl Untouched {
    fn bind() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Untouched(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn was_connected(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// A token endpoint on loopback answering every request with `answer`;
/// returns its URL and the count of requests.
async fn token_endpoint(
    answer: impl IntoResponse + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move || {
            let answer = answer.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            async move { answer.into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn xoauth2_account(token_url: &str) -> Value {
    json!({
        "username": "herald@acme.example", "mechanism": "xoauth2",
        "oauth2": {"token_url": token_url, "client_id": "herald-app", "client_secret": "client-s3cret"}
    })
}

fn smtp_entry(port: u16) -> Value {
    json!({"name": "mx", "host": "127.0.0.1", "port": port, "security": "none", "requires_auth": true})
}

/// Tenant `acme` of `app` sends one message through a test SMTP server (which
/// takes the XOAUTH2 token `fresh-token` for herald@acme.example) with an
/// XOAUTH2 account whose tokens come from `token_url`. Returns the message
/// after its first attempt, and the server.
async fn first_attempt(app: &TestApp, token_url: &str) -> (Value, TestSmtpServer) {
    let config = ServerConfig::new().xoauth2_token("herald@acme.example", "fresh-token");
    let smtp = TestSmtpServer::start_with(config).await;
    let acme = app.tenant("acme").await;
    let account = Some(xoauth2_account(token_url));
    app.configure(&acme, smtp_entry(smtp.port()), account).await;
    let id = app.submit_to(&acme, "a@acme.example", "Token").await;
    (app.wait_for_attempts(&acme, &id, 1).await, smtp)
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    let elsewhere = Untouched::bind();
    let location = format!("http://127.0.0.1:{}/token", elsewhere.port());
    let redirect = (
        AxumStatus::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    );
    let (token_url, calls) = token_endpoint(redirect).await;
    let app = spawn_app().await;
    let (message, smtp) = first_attempt(&app, &token_url).await;
    let text = message.to_string();
    assert!(
        text.contains("HTTP 307 Temporary Redirect (a redirect), and redirects are not followed"),
        "{message}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(
        !elsewhere.was_connected(),
        "the redirect's target was connected to"
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn an_error_answer_shows_only_the_oauth2_code_and_the_status() {
    let (token_url, _) = token_endpoint((
        AxumStatus::UNAUTHORIZED,
        axum::Json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215 root:x:0:0 ami-id i-0abc meta-data"
        })),
    ))
    .await;
    let app = spawn_app().await;
    let (message, _smtp) = first_attempt(&app, &token_url).await;
    let text = message.to_string();
    assert!(
        text.contains("the OAuth2 token endpoint refused: HTTP 401 Unauthorized, invalid_client"),
        "{message}"
    );
    for echoed in ["AADSTS", "root:x", "ami-id", "meta-data"] {
        assert!(!text.contains(echoed), "{echoed} was echoed: {message}");
    }
}

#[tokio::test]
async fn an_error_code_outside_rfc_6749_is_not_shown_either() {
    let (token_url, _) = token_endpoint((
        AxumStatus::BAD_REQUEST,
        axum::Json(json!({"error": "ssh-rsa AAAAB3NzaC1yc2E internal-secret"})),
    ))
    .await;
    let app = spawn_app().await;
    let (message, _smtp) = first_attempt(&app, &token_url).await;
    let text = message.to_string();
    assert!(
        text.contains("the OAuth2 token endpoint refused: HTTP 400 Bad Request"),
        "{message}"
    );
    assert!(!text.contains("internal-secret"), "{message}");
}

#[tokio::test]
async fn no_token_is_fetched_for_a_forbidden_smtp_server() {
    let token_endpoint = Untouched::bind();
    // The default policy: loopback, where the SMTP server listens, is forbidden.
    let app = spawn_app_with(|s| s.egress = Egress::default()).await;
    let token_url = format!("https://localhost:{}/token", token_endpoint.port());
    let (message, smtp) = first_attempt(&app, &token_url).await;
    assert!(message.to_string().contains("egress policy"), "{message}");
    assert!(
        !token_endpoint.was_connected(),
        "the token endpoint was contacted for a forbidden SMTP server"
    );
    assert!(smtp.messages().is_empty());
}

/// The rule the API gives for `oauth2.token_url`, or `None` when the account was created.
async fn token_url_rule(
    app: &TestApp,
    tenant: &TestTenant,
    server: &str,
    url: &str,
) -> Option<String> {
    // Each accepted account needs a user name of its own on the server.
    static ACCOUNTS: AtomicUsize = AtomicUsize::new(0);
    let mut account = xoauth2_account(url);
    account["username"] =
        format!("u{}@acme.example", ACCOUNTS.fetch_add(1, Ordering::SeqCst)).into();
    let (status, body) = app
        .post_as_admin(tenant, &format!("smtp-servers/{server}/accounts"), account)
        .await;
    if status == StatusCode::CREATED {
        return None;
    }
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
    let errors = body["errors"].as_array().expect("an errors array");
    assert_eq!(errors.len(), 1, "{url}: {body}");
    assert_eq!(errors[0]["field"], "oauth2.token_url", "{url}: {body}");
    assert!(!body.to_string().contains("client-s3cret"));
    Some(errors[0]["rule"].as_str().unwrap().to_owned())
}

async fn server_for(app: &TestApp, tenant: &TestTenant) -> String {
    app.grant_credential_storage(&tenant.slug).await;
    let server = app
        .create_as_admin(tenant, "smtp-servers", smtp_entry(2525))
        .await;
    server["id"].as_str().unwrap().to_owned()
}

/// Asserts that each token URL, given to an account of the server, is
/// refused by a rule containing the words beside it.
async fn assert_refused_token_urls(
    app: &TestApp,
    tenant: &TestTenant,
    server: &str,
    refused: &[(&str, &str)],
) {
    for (url, rule) in refused {
        let got = token_url_rule(app, tenant, server, url).await;
        assert!(
            got.as_deref().is_some_and(|got| got.contains(rule)),
            "{url}: {got:?}"
        );
    }
}

#[tokio::test]
async fn the_token_url_is_checked_with_a_url_parser_and_the_egress_policy() {
    // This node allows loopback, as an operator with a local token proxy would.
    let (app, acme) = app_with_acme().await;
    let server = server_for(&app, &acme).await;
    let refused = [
        (
            "http://localhost:pw@169.254.169.254/latest/meta-data/",
            "user name or password",
        ),
        ("https://user@login.example/token", "user name or password"),
        ("https://login.example/token#fragment", "fragment"),
        ("https://169.254.169.254/token", "egress policy"),
        ("https://[fd00:ec2::254]/token", "egress policy"),
        ("https://100.100.100.200/token", "egress policy"),
        ("https://[64:ff9b::a9fe:a9fe]/token", "egress policy"),
        ("https://[::ffff:169.254.169.254]/token", "egress policy"),
        ("http://203.0.113.7/token", "https://"),
        ("ftp://login.example/token", "https://"),
    ];
    assert_refused_token_urls(&app, &acme, &server, &refused).await;
    for url in [
        "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "http://127.0.0.1:8080/token",
        "http://localhost:8080/token",
    ] {
        assert_eq!(
            token_url_rule(&app, &acme, &server, url).await,
            None,
            "{url}"
        );
    }

    // Without an allow list, plain http and loopback are refused, however spelt.
    let strict = spawn_app_with(|s| s.egress = Egress::default()).await;
    let acme = strict.tenant("acme").await;
    let server = server_for(&strict, &acme).await;
    let refused = [
        ("http://localhost:8080/token", "https://"),
        ("https://127.0.0.1:8443/token", "egress policy"),
        ("http://2130706433:8080/token", "egress policy"),
        ("http://0x7f.1:8080/token", "egress policy"),
        ("https://0177.0.0.1/token", "egress policy"),
        ("https://[::1]/token", "egress policy"),
    ];
    assert_refused_token_urls(&strict, &acme, &server, &refused).await;
    assert_eq!(
        token_url_rule(&strict, &acme, &server, "https://localhost:8443/token").await,
        None,
        "a name is judged on its addresses at each fetch"
    );
}

#[tokio::test]
async fn an_smtp_host_spelt_as_a_number_is_refused_with_the_field_named() {
    let (app, acme) = app_with_acme().await;
    for host in ["2130706433", "0177.0.0.1", "0x7f.1"] {
        let (status, body) = app
            .post_as_admin(
                &acme,
                "smtp-servers",
                json!({"name": "mx", "host": host, "port": 25, "security": "none"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{host}: {body}");
        assert_eq!(body["errors"][0]["field"], "host", "{host}: {body}");
        assert!(
            body["errors"][0]["rule"]
                .as_str()
                .unwrap()
                .contains("numeric last label"),
            "{host}: {body}"
        );
    }
}
