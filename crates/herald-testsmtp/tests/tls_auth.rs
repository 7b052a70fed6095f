//! TLS (STARTTLS and implicit) and AUTH behaviour of the test server.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Client, client_config, connect, connect_ehlo, tls_handshake};
use herald_testsmtp::{Action, Command, Rule, ServerConfig, TestSmtpServer, TestTls};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

fn test_tls() -> TestTls {
    TestTls::generate(&["localhost", "127.0.0.1"])
}

/// Sends a one-recipient message and returns the reply code after the final dot.
async fn send_message<S: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<S>) -> u16 {
    client.begin_data("s@example.com", "r@example.com").await;
    client.send("Subject: secure\r\n\r\nbody\r\n.\r\n").await;
    client.read_reply().await.code
}

/// Runs EHLO + STARTTLS on a plaintext client and returns the TLS client after the
/// handshake (before the second EHLO).
async fn upgrade(
    mut client: Client<TcpStream>,
    tls: &TestTls,
) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let reply = client.cmd("STARTTLS").await;
    assert_eq!(
        (reply.code, reply.text()),
        (220, "2.0.0 ready to start TLS")
    );
    let stream = tls_handshake(client.into_inner(), client_config(&tls.ca_pem()))
        .await
        .expect("tls handshake with the test CA trusted");
    Client::new(stream)
}

fn plain(user: &str, password: &str) -> String {
    BASE64.encode(format!("\0{user}\0{password}"))
}

#[tokio::test]
async fn starttls_upgrades_and_resets_the_session() {
    let tls = test_tls();
    let server = TestSmtpServer::start_with(ServerConfig::default().starttls(tls.clone())).await;
    let mut client = connect(server.addr()).await;
    client.read_reply().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");

    let mut client = upgrade(client, &tls).await;
    // The upgrade forgets the earlier EHLO.
    assert_eq!(client.cmd("MAIL FROM:<s@example.com>").await.code, 503);
    let ehlo = client.cmd("EHLO client.test").await;
    assert_eq!(ehlo.code, 250);
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert_eq!(client.cmd("STARTTLS").await.code, 503);
    assert_eq!(send_message(&mut client).await, 250);
    let messages = server.messages();
    assert!(messages[0].tls);
    assert_eq!(messages[0].header("Subject").as_deref(), Some("secure"));
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let tls = test_tls();
    let server = TestSmtpServer::start_with(ServerConfig::default().starttls(tls.clone())).await;
    let mut client = connect_ehlo(server.addr()).await;
    client
        .send("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        .await;
    assert_eq!(client.read_reply().await.code, 220);
    let stream = tls_handshake(client.into_inner(), client_config(&tls.ca_pem()))
        .await
        .expect("tls handshake");
    let mut client = Client::new(stream);
    client.cmd("EHLO client.test").await;
    // Had the injected MAIL been obeyed, RCPT would be accepted.
    assert_eq!(client.cmd("RCPT TO:<r@example.com>").await.code, 503);
    assert!(
        !server.commands().iter().any(|c| c.contains("injected")),
        "{:?}",
        server.commands()
    );
}

#[tokio::test]
async fn require_tls_refuses_plaintext_mail() {
    let tls = test_tls();
    let config = ServerConfig::default().starttls(tls.clone()).require_tls();
    let server = TestSmtpServer::start_with(config).await;
    let mut client = connect_ehlo(server.addr()).await;
    let reply = client.cmd("MAIL FROM:<s@example.com>").await;
    assert_eq!(
        (reply.code, reply.text()),
        (530, "5.7.0 must issue a STARTTLS command first")
    );
    let mut client = upgrade(client, &tls).await;
    client.cmd("EHLO client.test").await;
    assert_eq!(send_message(&mut client).await, 250);
}

#[tokio::test]
async fn hide_starttls_still_accepts_the_command() {
    let tls = test_tls();
    let config = ServerConfig::default()
        .starttls(tls.clone())
        .hide_starttls();
    let server = TestSmtpServer::start_with(config).await;
    let mut client = connect(server.addr()).await;
    client.read_reply().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let mut client = upgrade(client, &tls).await;
    assert_eq!(client.cmd("EHLO client.test").await.code, 250);
}

#[tokio::test]
async fn extra_after_starttls_sends_injected_bytes() {
    let tls = test_tls();
    let config = ServerConfig::default().starttls(tls).extra_after_starttls();
    let server = TestSmtpServer::start_with(config).await;
    let mut client = connect_ehlo(server.addr()).await;
    assert_eq!(client.cmd("STARTTLS").await.code, 220);
    assert_eq!(client.read_line().await, "250 injected\r\n");
}

#[tokio::test]
async fn implicit_tls_from_the_first_byte() {
    let tls = test_tls();
    let server =
        TestSmtpServer::start_with(ServerConfig::default().implicit_tls(tls.clone())).await;
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let stream = tls_handshake(tcp, tls.client_config())
        .await
        .expect("implicit tls handshake");
    let mut client = Client::new(stream);
    assert_eq!(client.read_reply().await.code, 220);
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert_eq!(send_message(&mut client).await, 250);
    assert!(server.messages()[0].tls);
}

#[tokio::test]
async fn expired_certificate_is_rejected_by_the_client() {
    let tls = TestTls::expired(&["localhost"]);
    let server =
        TestSmtpServer::start_with(ServerConfig::default().implicit_tls(tls.clone())).await;
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let error = tls_handshake(tcp, client_config(&tls.ca_pem()))
        .await
        .expect_err("an expired certificate must fail verification");
    assert!(error.to_string().contains("xpired"), "{error}");
}

#[tokio::test]
async fn auth_plain_success_is_recorded_and_masked() {
    let server = TestSmtpServer::start_with(ServerConfig::default().auth("alice", "secret")).await;
    let mut client = connect(server.addr()).await;
    client.read_reply().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN XOAUTH2"),
        "{ehlo:?}"
    );
    let reply = client.cmd("MAIL FROM:<s@example.com>").await;
    assert_eq!(
        (reply.code, reply.text()),
        (530, "5.7.0 authentication required")
    );

    let credentials = plain("alice", "secret");
    let reply = client.cmd(&format!("AUTH PLAIN {credentials}")).await;
    assert_eq!(
        (reply.code, reply.text()),
        (235, "2.7.0 authentication successful")
    );
    assert_eq!(send_message(&mut client).await, 250);
    assert_eq!(
        server.messages()[0].authenticated_as.as_deref(),
        Some("alice")
    );

    let commands = server.commands();
    assert!(
        commands.iter().any(|c| c == "AUTH PLAIN <auth data>"),
        "{commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains(&credentials)),
        "{commands:?}"
    );
}

#[tokio::test]
async fn auth_plain_failure_keeps_mail_refused() {
    let server = TestSmtpServer::start_with(ServerConfig::default().auth("alice", "secret")).await;
    let mut client = connect_ehlo(server.addr()).await;
    let reply = client
        .cmd(&format!("AUTH PLAIN {}", plain("alice", "wrong")))
        .await;
    assert_eq!(
        (reply.code, reply.text()),
        (535, "5.7.8 authentication credentials invalid")
    );
    assert_eq!(client.cmd("MAIL FROM:<s@example.com>").await.code, 530);

    // The same mechanism with the response sent after an empty challenge.
    let reply = client.cmd("AUTH PLAIN").await;
    assert_eq!((reply.code, reply.text()), (334, ""));
    assert_eq!(client.cmd(&plain("alice", "secret")).await.code, 235);
    assert_eq!(
        server
            .commands()
            .iter()
            .filter(|c| *c == "<auth data>")
            .count(),
        1
    );
}

#[tokio::test]
async fn auth_login_prompts_for_username_and_password() {
    let server = TestSmtpServer::start_with(ServerConfig::default().auth("alice", "secret")).await;
    let mut client = connect_ehlo(server.addr()).await;
    let reply = client.cmd("AUTH LOGIN").await;
    assert_eq!((reply.code, reply.text()), (334, "VXNlcm5hbWU6"));
    let reply = client.cmd(&BASE64.encode("alice")).await;
    assert_eq!((reply.code, reply.text()), (334, "UGFzc3dvcmQ6"));
    assert_eq!(client.cmd(&BASE64.encode("secret")).await.code, 235);
}

#[tokio::test]
async fn auth_xoauth2_accepts_the_token_and_explains_failures() {
    let server =
        TestSmtpServer::start_with(ServerConfig::default().xoauth2_token("bob", "ya29.token"))
            .await;
    let xoauth2 = |token: &str| BASE64.encode(format!("user=bob\x01auth=Bearer {token}\x01\x01"));

    let mut client = connect_ehlo(server.addr()).await;
    let reply = client
        .cmd(&format!("AUTH XOAUTH2 {}", xoauth2("expired")))
        .await;
    assert_eq!(reply.code, 334);
    let error = BASE64.decode(reply.text()).expect("challenge is base64");
    assert_eq!(
        String::from_utf8(error).expect("utf-8 json"),
        r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#
    );
    let reply = client.cmd("").await;
    assert_eq!(
        (reply.code, reply.text()),
        (535, "5.7.8 username and password not accepted")
    );

    let reply = client
        .cmd(&format!("AUTH XOAUTH2 {}", xoauth2("ya29.token")))
        .await;
    assert_eq!(reply.code, 235);
    assert_eq!(send_message(&mut client).await, 250);
    assert_eq!(
        server.messages()[0].authenticated_as.as_deref(),
        Some("bob")
    );
}

#[tokio::test]
async fn scripted_auth_reply_overrides_the_verdict() {
    let server = TestSmtpServer::start_with(ServerConfig::default().auth("alice", "secret")).await;
    server.script(
        Rule::new(
            Command::Auth,
            Action::Reply(454, "4.7.0 temporary failure".into()),
        )
        .matching("plain alice")
        .times(1),
    );
    let mut client = connect_ehlo(server.addr()).await;
    let credentials = plain("alice", "secret");
    let auth = format!("AUTH PLAIN {credentials}");
    assert_eq!(client.cmd(&auth).await.code, 454);
    assert_eq!(client.cmd(&auth).await.code, 235);
}
