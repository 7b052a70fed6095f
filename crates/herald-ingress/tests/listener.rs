//! The SMTP listener over real sockets: EHLO, STARTTLS and AUTH, pipelining,
//! smuggling, limits, refusals passed through, and stopping.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_ingress::{Listener, Refusal, Sender, StartError};
use herald_testkit::eventually;
use herald_testsmtp::TestTls;
use support::*;

const MESSAGE: &[u8] =
    b"From: app@example.test\r\nTo: ops@example.test\r\nSubject: hello\r\n\r\nbody\r\n";

fn remote() -> herald_ingress::Settings {
    // Tests can only connect over loopback: with this off, the client is
    // treated as a remote one.
    let mut settings = settings();
    settings.loopback_is_local = false;
    settings
}

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
    let answer = smtp
        .send_mail("app@example.test", "ops@example.test", MESSAGE)
        .await;
    expect(&answer, 250, "2.0.0");
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
    expect(&smtp.command("*").await, 501, "5.0.0");
    assert_eq!(smtp.command("AUTH LOGIN").await.code, 334);
    assert_eq!(smtp.command(&STANDARD.encode(USER)).await.code, 334);
    expect(&smtp.command("*").await, 501, "5.0.0");
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
async fn a_failed_reload_keeps_the_certificate() {
    let mut settings = remote();
    settings.tls_poll = Duration::from_millis(20);
    let server = start(Memory::new(), true, settings).await;
    let tls = server.tls.clone().unwrap();
    let files = server.files.clone().unwrap();
    // A key that is not the certificate's: the reload fails.
    let other = TestTls::generate(&["localhost"]);
    std::fs::write(&files.1, other.key_pem()).unwrap();
    // No signal of the failed attempt reaches a client, so this only shows
    // that sessions keep working with the certificate loaded before.
    for _ in 0..3 {
        let mut smtp = Smtp::connect(server.addr).await.starttls(&tls).await;
        smtp.ehlo().await;
    }
}

#[tokio::test]
async fn a_connector_needs_no_auth_and_its_rate_limit_answers_451() {
    let server = start(Memory::with_connector(Some(1)), false, remote()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", MESSAGE)
            .await,
        250,
        "2.0.0",
    );
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        451,
        "4.7.0",
    );
    let messages = server.backend.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.by, Sender::Connector("conn-1".into()));
    let received = String::from_utf8_lossy(&messages[0].1.data).into_owned();
    assert!(received.contains("with ESMTP id "), "{received}");
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.send(
        "EHLO client.test\r\nMAIL FROM:<app@example.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<a@example.test>\r\n\
         RCPT TO:<not an address>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(smtp.read().await.unwrap().code, 250);
    expect(&smtp.read().await.unwrap(), 250, "2.1.0");
    expect(&smtp.read().await.unwrap(), 250, "2.1.5");
    expect(&smtp.read().await.unwrap(), 553, "5.1.3");
    expect(&smtp.read().await.unwrap(), 250, "2.1.5");
    expect(&smtp.read().await.unwrap(), 250, "2.1.5");
    assert_eq!(smtp.read().await.unwrap().code, 354);
    // The message and the next transaction in one write too.
    let mut pipelined = stuffed(b"Subject: one\r\n\r\n.leading dot\r\n");
    pipelined
        .extend_from_slice(b"MAIL FROM:<app@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n");
    smtp.send(pipelined).await;
    expect(&smtp.read().await.unwrap(), 250, "2.0.0");
    expect(&smtp.read().await.unwrap(), 250, "2.1.0");
    expect(&smtp.read().await.unwrap(), 250, "2.1.5");
    assert_eq!(smtp.read().await.unwrap().code, 354);
    smtp.send(stuffed(b"Subject: two\r\n\r\n")).await;
    expect(&smtp.read().await.unwrap(), 250, "2.0.0");

    let messages = server.backend.messages();
    assert_eq!(messages.len(), 2);
    let recipients: Vec<String> = messages[0]
        .1
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(recipients, ["a@example.test", "b@example.test"]);
    assert_eq!(
        without_received(&messages[0].1.data),
        b"Subject: one\r\n\r\n.leading dot\r\n"
    );
    assert_eq!(messages[1].1.recipients[0].to_string(), "c@example.test");
}

#[tokio::test]
async fn smuggled_ends_of_data_never_end_it_and_never_make_two_messages() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    for smuggled in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let mut smtp = Smtp::connect(server.addr).await;
        smtp.ehlo().await;
        smtp.send("MAIL FROM:<app@example.test>\r\nRCPT TO:<ops@example.test>\r\nDATA\r\n")
            .await;
        expect(&smtp.read().await.unwrap(), 250, "2.1.0");
        expect(&smtp.read().await.unwrap(), 250, "2.1.5");
        assert_eq!(smtp.read().await.unwrap().code, 354);
        smtp.send(format!(
            "Subject: first\r\n\r\nhello{smuggled}MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n\
             DATA\r\nSubject: smuggled\r\n\r\nbad\r\n.\r\nNOOP\r\n"
        ))
        .await;
        let answer = smtp.read().await.unwrap();
        expect(&answer, 554, "5.5.2");
        // The session is in step: the NOOP after the real end is a command.
        expect(&smtp.read().await.unwrap(), 250, "2.0.0");
        expect(&smtp.command("QUIT").await, 221, "2.0.0");
    }
    for bare in [
        "Subject: x\r\n\r\na\nb\r\n.\r\n",
        "Subject: x\r\n\r\na\rb\r\n.\r\n",
        "Subject: x\nY: z\r\n\r\n.\r\n",
    ] {
        let mut smtp = Smtp::connect(server.addr).await;
        smtp.ehlo().await;
        smtp.send("MAIL FROM:<app@example.test>\r\nRCPT TO:<ops@example.test>\r\nDATA\r\n")
            .await;
        for _ in 0..2 {
            smtp.read().await.unwrap();
        }
        assert_eq!(smtp.read().await.unwrap().code, 354);
        smtp.send(bare).await;
        expect(&smtp.read().await.unwrap(), 554, "5.5.2");
        expect(&smtp.command("NOOP").await, 250, "2.0.0");
    }
    assert!(server.backend.messages().is_empty(), "nothing was stored");
}

/// A 10 MiB message with an attachment, as MIME would carry it.
fn big_message(size: usize) -> Vec<u8> {
    let mut message = b"From: app@example.test\r\nTo: ops@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n.\r\n..\r\n\
--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"report.bin\"\r\n\r\n"
        .to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut n = 0usize;
    let end = b"\r\n--b1--\r\n";
    while message.len() + 78 + end.len() <= size {
        for _ in 0..76 {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            message.push(alphabet[(n >> 16) % 64]);
        }
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(end);
    message
}

#[tokio::test]
async fn a_10_mib_message_arrives_byte_for_byte() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let message = big_message(10 * 1024 * 1024);
    assert!(message.len() <= 10 * 1024 * 1024);
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    let answer = smtp
        .send_mail("app@example.test", "ops@example.test", &message)
        .await;
    expect(&answer, 250, "2.0.0");
    let stored = server.backend.messages();
    assert!(
        without_received(&stored[0].1.data) == message.as_slice(),
        "the message arrived unchanged"
    );
}

#[tokio::test]
async fn size_limits_at_mail_and_after_data() {
    let mut settings = settings();
    settings.max_message_size = 1000;
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    let keywords = smtp.ehlo().await;
    assert!(keywords.iter().any(|k| k == "SIZE 1000"), "{keywords:?}");
    expect(
        &smtp.command("MAIL FROM:<app@example.test> SIZE=1001").await,
        552,
        "5.3.4",
    );
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(990));
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", body.as_bytes())
            .await,
        552,
        "5.3.4",
    );
    expect(&smtp.command("NOOP").await, 250, "2.0.0");
    let body = format!("Subject: fits\r\n\r\n{}\r\n", "x".repeat(900));
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", body.as_bytes())
            .await,
        250,
        "2.0.0",
    );
    assert_eq!(server.backend.messages().len(), 1);
}

#[tokio::test]
async fn lines_too_long() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    // 1,000 octets with CRLF is the most a command line may have.
    let longest = format!("NOOP {}", "x".repeat(1000 - 5 - 2));
    expect(&smtp.command(&longest).await, 250, "2.0.0");
    let over = format!("NOOP {}", "x".repeat(1000 - 5 - 1));
    expect(&smtp.command(&over).await, 500, "5.5.2");
    // What was in the long line is never executed.
    let hidden = format!("{}\rQUIT", "x".repeat(5000));
    expect(&smtp.command(&hidden).await, 500, "5.5.2");
    expect(&smtp.command("NOOP").await, 250, "2.0.0");

    let line = "y".repeat(998);
    let ok = format!("Subject: x\r\n\r\n{line}\r\n");
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", ok.as_bytes())
            .await,
        250,
        "2.0.0",
    );
    let over = format!("Subject: x\r\n\r\n{line}y\r\n");
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", over.as_bytes())
            .await,
        554,
        "5.6.0",
    );
    assert_eq!(server.backend.messages().len(), 1);
}

#[tokio::test]
async fn too_many_header_fields() {
    let mut settings = settings();
    settings.max_header_fields = 3;
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    let ok = b"A: 1\r\nB: 2\r\n  folded\r\nC: 3\r\n\r\nD: body\r\n";
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", ok)
            .await,
        250,
        "2.0.0",
    );
    let over = b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nbody\r\n";
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", over)
            .await,
        552,
        "5.3.4",
    );
}

#[tokio::test]
async fn bytes_pipelined_after_starttls_are_never_executed() {
    let backend = Memory::with_connector(None);
    let server = start(backend, true, remote()).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    smtp.send("STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n")
        .await;
    let answer = smtp.read().await.expect("a reply");
    expect(&answer, 554, "5.5.1");
    assert!(smtp.closed().await, "the session is closed");
    assert!(server.backend.messages().is_empty());
}

#[tokio::test]
async fn sessions_per_address_are_limited() {
    let mut settings = settings();
    settings.max_sessions_per_ip = 2;
    let server = start(Memory::new(), false, settings).await;
    let first = Smtp::connect(server.addr).await;
    let _second = Smtp::connect(server.addr).await;
    let mut third = Smtp::open(server.addr).await;
    expect(&third.read().await.expect("a reply"), 421, "4.7.0");
    assert!(third.closed().await);
    drop(first);
    let addr = server.addr;
    eventually(
        "a place for a new session",
        Duration::from_secs(20),
        || async move {
            let mut smtp = Smtp::open(addr).await;
            (smtp.read().await?.code == 220).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn sessions_in_all_are_limited() {
    let mut settings = settings();
    settings.max_sessions = 1;
    let server = start(Memory::new(), false, settings).await;
    let _first = Smtp::connect(server.addr).await;
    let mut second = Smtp::open(server.addr).await;
    expect(&second.read().await.expect("a reply"), 421, "4.3.2");
    assert!(second.closed().await);
}

#[tokio::test]
async fn a_backend_refusal_is_passed_through_never_250() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    *server.backend.refuse.lock().unwrap() = Some(Refusal::store_unavailable());
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", MESSAGE)
            .await,
        451,
        "4.3.0",
    );
    *server.backend.refuse.lock().unwrap() = Some(Refusal::new(452, "4.3.1", "Queue full"));
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", MESSAGE)
            .await,
        452,
        "4.3.1",
    );
    *server.backend.refuse.lock().unwrap() = None;
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", MESSAGE)
            .await,
        250,
        "2.0.0",
    );
}

#[tokio::test]
async fn a_store_that_cannot_answer_who_is_sending_gives_temporary_replies() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    *server.backend.unavailable.lock().unwrap() = Some(Refusal::new(
        454,
        "4.7.0",
        "Temporary authentication failure",
    ));
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
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
    expect(
        &smtp
            .send_mail("app@example.test", "ops@example.test", MESSAGE)
            .await,
        250,
        "2.0.0",
    );
}

#[tokio::test]
async fn failed_auth_from_an_address_is_throttled() {
    let mut settings = settings();
    settings.max_auth_failures = 3;
    let server = start(Memory::new(), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.ehlo().await;
    expect(&smtp.login(USER, "a").await, 535, "5.7.8");
    expect(&smtp.login(USER, "b").await, 535, "5.7.8");
    let mut other = Smtp::connect(server.addr).await;
    other.ehlo().await;
    expect(&other.login(USER, "c").await, 535, "5.7.8");
    // Blocked now, even with the right password, in every session from the address.
    expect(&smtp.login(USER, PASSWORD).await, 454, "4.7.0");
    assert!(smtp.closed().await);
    let mut third = Smtp::connect(server.addr).await;
    third.ehlo().await;
    expect(&third.login(USER, PASSWORD).await, 454, "4.7.0");
}

#[tokio::test]
async fn the_order_of_commands_and_their_codes() {
    let mut settings = settings();
    settings.max_recipients = 2;
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        503,
        "5.5.1",
    );
    let helo = smtp.command("HELO client.test").await;
    assert_eq!(helo.code, 250, "{helo}");
    expect(
        &smtp.command("RCPT TO:<ops@example.test>").await,
        503,
        "5.5.1",
    );
    expect(&smtp.command("DATA").await, 503, "5.5.1");
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        250,
        "2.1.0",
    );
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        503,
        "5.5.1",
    );
    expect(&smtp.command("DATA").await, 503, "5.5.1");
    expect(
        &smtp.command("RCPT TO:<bad@@example.test>").await,
        553,
        "5.1.3",
    );
    expect(&smtp.command("DATA").await, 554, "5.5.1");
    expect(
        &smtp.command("RCPT TO:<a@example.test>").await,
        250,
        "2.1.5",
    );
    expect(
        &smtp.command("RCPT TO:<b@example.test>").await,
        250,
        "2.1.5",
    );
    expect(
        &smtp.command("RCPT TO:<c@example.test>").await,
        452,
        "4.5.3",
    );
    expect(
        &smtp.command("RCPT TO:<d@example.test> NOTIFY=NEVER").await,
        555,
        "5.5.4",
    );
    expect(&smtp.command("RSET").await, 250, "2.0.0");
    expect(&smtp.command("DATA").await, 503, "5.5.1");
    expect(
        &smtp.command("MAIL FROM:<not an address>").await,
        553,
        "5.1.7",
    );
    expect(
        &smtp.command("MAIL FROM:<app@example.test> RET=FULL").await,
        555,
        "5.5.4",
    );
    expect(&smtp.command("VRFY ops").await, 252, "2.5.0");
    expect(&smtp.command("HELP").await, 214, "2.0.0");
    expect(&smtp.command("EXPN list").await, 502, "5.5.1");
    expect(&smtp.command("FOO bar").await, 500, "5.5.2");
    expect(&smtp.command("NOOP").await, 250, "2.0.0");
    // SMTPUTF8: an internationalised address needs it.
    expect(
        &smtp.command("MAIL FROM:<jörg@exämple.test>").await,
        553,
        "5.6.7",
    );
    expect(
        &smtp.command("MAIL FROM:<jörg@exämple.test> SMTPUTF8").await,
        250,
        "2.1.0",
    );
    expect(
        &smtp.command("RCPT TO:<zoë@example.test>").await,
        250,
        "2.1.5",
    );
    expect(&smtp.command("DATA").await, 354, "");
    smtp.send(stuffed("Subject: grüße\r\n\r\nhallo\r\n".as_bytes()))
        .await;
    expect(&smtp.read().await.unwrap(), 250, "2.0.0");
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        250,
        "2.1.0",
    );
    expect(
        &smtp.command("RCPT TO:<zoë@example.test>").await,
        553,
        "5.6.7",
    );
    expect(&smtp.command("QUIT").await, 221, "2.0.0");
    let messages = server.backend.messages();
    assert!(messages[0].1.smtputf8);
    assert_eq!(messages[0].1.reverse_path, "jörg@exämple.test");
    let received = String::from_utf8_lossy(&messages[0].1.data).into_owned();
    assert!(
        received.contains("with SMTP id "),
        "HELO is SMTP: {received}"
    );
}

#[tokio::test]
async fn stopping_finishes_the_message_in_flight_then_closes() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut idle = Smtp::connect(server.addr).await;
    idle.ehlo().await;
    let mut busy = Smtp::connect(server.addr).await;
    busy.ehlo().await;
    expect(
        &busy.command("MAIL FROM:<app@example.test>").await,
        250,
        "2.1.0",
    );
    expect(
        &busy.command("RCPT TO:<ops@example.test>").await,
        250,
        "2.1.5",
    );
    assert_eq!(busy.command("DATA").await.code, 354);
    busy.send("Subject: in flight\r\n\r\nfirst half\r\n").await;

    server.stop.send(true).unwrap();
    expect(&idle.read().await.expect("a reply"), 421, "4.3.2");
    assert!(idle.closed().await);
    busy.send("second half\r\n.\r\n").await;
    expect(&busy.read().await.expect("a reply"), 250, "2.0.0");
    expect(&busy.read().await.expect("a reply"), 421, "4.3.2");
    assert!(busy.closed().await);
    server.task.await.unwrap();
    assert_eq!(server.backend.messages().len(), 1);
    // The sockets are closed.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn an_idle_client_is_told_421_and_closed() {
    let mut settings = settings();
    settings.command_timeout = Duration::from_millis(50);
    let server = start(Memory::new(), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    expect(&smtp.read().await.expect("a reply"), 421, "4.4.2");
    assert!(smtp.closed().await);
}

#[tokio::test]
async fn starting_needs_what_it_needs() {
    let backend = Memory::new();
    let mut settings = settings();
    settings.smtps_listen = Some("127.0.0.1:0".parse().unwrap());
    let error = Listener::bind(settings.clone(), backend.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, StartError::SmtpsWithoutCertificate),
        "{error}"
    );
    settings.tls_cert = Some("/nonexistent/cert.pem".into());
    let error = Listener::bind(settings.clone(), backend.clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(error, StartError::HalfCertificate), "{error}");
    settings.tls_key = Some("/nonexistent/key.pem".into());
    let error = Listener::bind(settings.clone(), backend.clone())
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = support::settings();
    settings.listen = Some(taken.local_addr().unwrap());
    let error = Listener::bind(settings, backend).await.err().unwrap();
    assert!(matches!(error, StartError::Bind { .. }), "{error}");
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
    let recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(recipients, ["ops@example.test", "zoë@example.test"]);
    assert!(
        without_received(&envelope.data) == message.as_slice(),
        "the message arrived unchanged"
    );
    assert!(
        String::from_utf8_lossy(&envelope.data)
            .starts_with("Received: from python.test ([127.0.0.1])")
    );
}
