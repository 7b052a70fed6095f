//! The SMTP listener's TLS and AUTH over real sockets: STARTTLS, implicit
//! TLS, certificate reloads, AUTH PLAIN and LOGIN, failed-AUTH throttling,
//! and Python's smtplib as a third-party client.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_ingress::{Refusal, Sender};
use herald_testkit::eventually;
use herald_testsmtp::TestTls;
use support::*;

#[tokio::test]
async fn ehlo_without_a_certificate_offers_no_starttls_and_auth_only_on_loopback() {
    let server = start(Memory::new(), false, settings()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    let keywords = smtp.ehlo().await;
    for keyword in [
        "PIPELINING",
        "SIZE 10485760",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(
            keywords.iter().any(|k| k == keyword),
            "{keyword} in {keywords:?}"
        );
    }
    assert!(!keywords.iter().any(|k| k == "STARTTLS"), "{keywords:?}");
    expect(&smtp.login(USER, PASSWORD).await, 235, "2.7.0");

    let server = start(Memory::new(), false, remote()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    let keywords = smtp.ehlo().await;
    assert!(
        !keywords
            .iter()
            .any(|k| k.starts_with("AUTH") || k == "STARTTLS"),
        "{keywords:?}"
    );
    expect(&smtp.login(USER, PASSWORD).await, 538, "5.7.11");
    expect(&smtp.command("STARTTLS").await, 502, "5.5.1");
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        530,
        "5.7.0",
    );
}

#[tokio::test]
async fn starttls_then_auth_plain_and_a_message_with_its_received_header() {
    let server = start(Memory::new(), true, remote()).await;
    let tls = server.tls.clone().unwrap();
    let mut smtp = Smtp::connect(server.addr).await;
    let keywords = smtp.ehlo().await;
    assert!(keywords.iter().any(|k| k == "STARTTLS"), "{keywords:?}");
    assert!(
        !keywords.iter().any(|k| k.starts_with("AUTH")),
        "{keywords:?}"
    );
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        530,
        "5.7.0",
    );

    let mut smtp = smtp.starttls(&tls).await;
    // What was said before TLS is forgotten: EHLO again.
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        503,
        "5.5.1",
    );
    let keywords = smtp.ehlo().await;
    assert!(
        keywords.iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "{keywords:?}"
    );
    assert!(!keywords.iter().any(|k| k == "STARTTLS"), "{keywords:?}");
    expect(&smtp.command("STARTTLS").await, 503, "5.5.1");
    expect(&smtp.login(USER, "wrong").await, 535, "5.7.8");
    expect(&smtp.login(USER, PASSWORD).await, 235, "2.7.0");
    expect(&smtp.login(USER, PASSWORD).await, 503, "5.5.1");
    let answer = smtp.deliver(MESSAGE).await;
    assert!(answer.text().contains("msg-1"), "{answer}");
    expect(&smtp.command("QUIT").await, 221, "2.0.0");

    let messages = server.backend.messages();
    assert_eq!(messages.len(), 1);
    let (client, envelope) = &messages[0];
    assert_eq!(client.by, Sender::Credential("cred-1".into()));
    assert_eq!(envelope.reverse_path, "app@example.test");
    assert_eq!(envelope.recipients.len(), 1);
    assert_eq!(envelope.recipients[0].to_string(), "ops@example.test");
    assert!(!envelope.smtputf8);
    assert_eq!(without_received(&envelope.data), MESSAGE);
    let received =
        String::from_utf8_lossy(&envelope.data[..envelope.data.len() - MESSAGE.len()]).into_owned();
    assert!(received.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.herald.test (Herald) with ESMTPSA id "), "{received}");
    assert!(
        received.contains("(using TLSv1.3 with cipher TLS13_"),
        "{received}"
    );
}

#[tokio::test]
async fn auth_login_plain_without_initial_response_and_cancel() {
    let server = start(Memory::new(), true, remote()).await;
    let tls = server.tls.clone().unwrap();

    let mut smtp = Smtp::connect(server.addr).await.starttls(&tls).await;
    smtp.ehlo().await;
    let answer = smtp.command("AUTH LOGIN").await;
    assert_eq!((answer.code, answer.text()), (334, "VXNlcm5hbWU6"));
    let answer = smtp.command(&STANDARD.encode(USER)).await;
    assert_eq!((answer.code, answer.text()), (334, "UGFzc3dvcmQ6"));
    expect(
        &smtp.command(&STANDARD.encode(PASSWORD)).await,
        235,
        "2.7.0",
    );

    let mut smtp = Smtp::connect(server.addr).await.starttls(&tls).await;
    smtp.ehlo().await;
    expect(&smtp.command("AUTH CRAM-MD5").await, 504, "5.5.4");
    assert_eq!(smtp.command("AUTH PLAIN").await.code, 334);
    expect(&smtp.command("*").await, 501, "5.7.0");
    assert_eq!(smtp.command("AUTH LOGIN").await.code, 334);
    assert_eq!(smtp.command(&STANDARD.encode(USER)).await.code, 334);
    expect(&smtp.command("*").await, 501, "5.7.0");
    assert_eq!(smtp.command("AUTH PLAIN").await.code, 334);
    let response = STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    expect(&smtp.command(&response).await, 235, "2.7.0");
    expect(
        &smtp.send_mail("", "ops@example.test", MESSAGE).await,
        250,
        "2.0.0",
    );
    assert_eq!(server.backend.messages()[0].1.reverse_path, "");
}

#[tokio::test]
async fn implicit_tls_and_a_certificate_reloaded_when_its_files_change() {
    let mut settings = remote();
    settings.smtps_listen = Some("127.0.0.1:0".parse().unwrap());
    settings.tls_poll = Duration::from_millis(20);
    let server = start(Memory::new(), true, settings).await;
    let first = server.tls.clone().unwrap();
    let smtps = server.smtps.unwrap();
    let mut smtp = Smtp::connect_tls(smtps, &first).await;
    let keywords = smtp.ehlo().await;
    assert!(
        keywords.iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "{keywords:?}"
    );
    assert!(!keywords.iter().any(|k| k == "STARTTLS"), "{keywords:?}");
    expect(&smtp.login(USER, PASSWORD).await, 235, "2.7.0");

    // A broken file keeps the certificate in use.
    let files = server.files.clone().unwrap();
    std::fs::write(&files.0, "not a certificate").unwrap();
    let second = TestTls::generate(&["localhost"]);
    write_certificate(&second, &files);
    eventually(
        "the new certificate in use",
        Duration::from_secs(20),
        || async {
            let stream = tokio::net::TcpStream::connect(smtps).await.ok()?;
            tokio_rustls::TlsConnector::from(second.client_config())
                .connect("localhost".try_into().unwrap(), stream)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let mut smtp = Smtp::connect_tls(smtps, &second).await;
    smtp.ehlo().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let mut settings = remote();
    // Only the signal can make the listener look at the files in this test.
    settings.tls_poll = Duration::from_secs(3600);
    let server = start(Memory::new(), true, settings).await;
    let second = TestTls::generate(&["localhost"]);
    write_certificate(&second, server.files.as_ref().unwrap());
    // The listener installed its SIGHUP handler when it was bound.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let addr = server.addr;
    eventually(
        "the certificate reloaded on SIGHUP",
        Duration::from_secs(20),
        || {
            let second = second.clone();
            async move {
                let mut smtp = Smtp::connect(addr).await;
                expect(&smtp.command("STARTTLS").await, 220, "2.0.0");
                smtp.handshake(&second).await.map(|_| ())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn bytes_pipelined_after_starttls_are_never_executed() {
    let backend = Memory::with_connector(None);
    let server = start(backend, true, remote()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.send("STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n")
        .await;
    let answer = smtp.read().await.expect("a reply");
    expect(&answer, 554, "5.5.1");
    assert!(smtp.closed().await, "the session is closed");
    assert!(server.backend.messages().is_empty());
}

#[tokio::test]
async fn a_store_that_cannot_answer_who_is_sending_gives_temporary_replies() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    *server.backend.unavailable.lock().unwrap() = Some(Refusal::new(
        454,
        "4.7.0",
        "Temporary authentication failure",
    ));
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    // Not 530: the client may well be a connector's, and its mail must wait, not bounce.
    *server.backend.unavailable.lock().unwrap() = None;
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        454,
        "4.7.0",
    );
    *server.backend.unavailable.lock().unwrap() = Some(Refusal::new(
        454,
        "4.7.0",
        "Temporary authentication failure",
    ));
    expect(&smtp.login(USER, PASSWORD).await, 454, "4.7.0");
    *server.backend.unavailable.lock().unwrap() = None;
    expect(&smtp.login(USER, PASSWORD).await, 235, "2.7.0");
    smtp.deliver(MESSAGE).await;
}

#[tokio::test]
async fn failed_auth_from_an_address_is_throttled() {
    let mut settings = settings();
    settings.max_auth_failures = 3;
    let server = start(Memory::new(), false, settings).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    expect(&smtp.login(USER, "a").await, 535, "5.7.8");
    expect(&smtp.login(USER, "b").await, 535, "5.7.8");
    let mut other = Smtp::connect_ehlo(server.addr).await;
    expect(&other.login(USER, "c").await, 535, "5.7.8");
    // Blocked now, even with the right password, in every session from the address.
    expect(&smtp.login(USER, PASSWORD).await, 454, "4.7.0");
    assert!(smtp.closed().await);
    let mut third = Smtp::connect_ehlo(server.addr).await;
    expect(&third.login(USER, PASSWORD).await, 454, "4.7.0");
}

#[tokio::test]
async fn python_smtplib_sends_through_starttls_and_login() {
    let Some(_) = herald_testkit::require(
        herald_testkit::Dependency::Python,
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .map_err(|e| format!("python3 cannot run: {e}")),
    ) else {
        return;
    };
    let server = start(Memory::new(), true, remote()).await;
    let tls = server.tls.clone().unwrap();
    let dir = scratch_dir();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, tls.ca_pem()).unwrap();
    let message = big_message(256 * 1024);
    let message_file = dir.join("message.eml");
    std::fs::write(&message_file, &message).unwrap();
    let script = r#"
import smtplib, ssl, sys
port, ca, user, password, path = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("localhost", int(port), local_hostname="python.test") as smtp:
    smtp.starttls(context=context)
    smtp.login(user, password)
    refused = smtp.sendmail("app@example.test", ["ops@example.test", "zoë@example.test"],
                            open(path, "rb").read(), mail_options=["SMTPUTF8"])
    assert not refused, refused
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.addr.port().to_string())
        .arg(&ca)
        .arg(USER)
        .arg(PASSWORD)
        .arg(&message_file)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages = server.backend.messages();
    assert_eq!(messages.len(), 1);
    let envelope = &messages[0].1;
    assert!(envelope.smtputf8);
    assert_eq!(
        recipients(envelope),
        ["ops@example.test", "zoë@example.test"]
    );
    assert!(
        without_received(&envelope.data) == message.as_slice(),
        "the message arrived unchanged"
    );
    assert!(
        String::from_utf8_lossy(&envelope.data)
            .starts_with("Received: from python.test ([127.0.0.1])")
    );
}
