//! The SMTP listener's protocol over real sockets: command order and codes,
//! pipelining, smuggling, size, line and header limits, rate and session
//! limits, backend refusals, timeouts and stopping.

mod support;

use std::time::Duration;

use herald_ingress::{Listener, Refusal, Sender, StartError};
use herald_testkit::eventually;
use support::*;

#[tokio::test]
async fn a_connector_needs_no_auth_and_its_rate_limit_answers_451() {
    let server = start(Memory::with_connector(Some(1)), false, remote()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.deliver(MESSAGE).await;
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
    assert_eq!(
        recipients(&messages[0].1),
        ["a@example.test", "b@example.test"]
    );
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
        let mut smtp = Smtp::connect_ehlo(server.addr).await;
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
        let mut smtp = Smtp::connect_ehlo(server.addr).await;
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

#[tokio::test]
async fn a_10_mib_message_arrives_byte_for_byte() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let message = big_message(10 * 1024 * 1024);
    assert!(message.len() <= 10 * 1024 * 1024);
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.deliver(&message).await;
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
    expect(&smtp.send_message(body.as_bytes()).await, 552, "5.3.4");
    expect(&smtp.command("NOOP").await, 250, "2.0.0");
    let body = format!("Subject: fits\r\n\r\n{}\r\n", "x".repeat(900));
    smtp.deliver(body.as_bytes()).await;
    assert_eq!(server.backend.messages().len(), 1);
}

#[tokio::test]
async fn lines_too_long() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
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
    smtp.deliver(ok.as_bytes()).await;
    let over = format!("Subject: x\r\n\r\n{line}y\r\n");
    expect(&smtp.send_message(over.as_bytes()).await, 554, "5.6.0");
    assert_eq!(server.backend.messages().len(), 1);
}

#[tokio::test]
async fn too_many_header_fields() {
    let mut settings = settings();
    settings.max_header_fields = 3;
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    let ok = b"A: 1\r\nB: 2\r\n  folded\r\nC: 3\r\n\r\nD: body\r\n";
    smtp.deliver(ok).await;
    let over = b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nbody\r\n";
    expect(&smtp.send_message(over).await, 552, "5.3.4");
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
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    expect(&smtp.send_message(MESSAGE).await, 451, "4.3.0");
    *server.backend.refuse.lock().unwrap() = Some(Refusal::new(452, "4.3.1", "Queue full"));
    expect(&smtp.send_message(MESSAGE).await, 452, "4.3.1");
    *server.backend.refuse.lock().unwrap() = None;
    smtp.deliver(MESSAGE).await;
}

#[tokio::test]
async fn the_order_of_commands_and_their_codes() {
    let mut settings = settings();
    settings.max_recipients = 2;
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect(server.addr).await;
    smtp.expect_replies(&[("MAIL FROM:<app@example.test>", 503, "5.5.1")])
        .await;
    let helo = smtp.command("HELO client.test").await;
    assert_eq!(helo.code, 250, "{helo}");
    smtp.expect_replies(&[
        ("RCPT TO:<ops@example.test>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("MAIL FROM:<app@example.test>", 250, "2.1.0"),
        ("MAIL FROM:<app@example.test>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("RCPT TO:<bad@@example.test>", 553, "5.1.3"),
        ("DATA", 554, "5.5.1"),
        ("RCPT TO:<a@example.test>", 250, "2.1.5"),
        ("RCPT TO:<b@example.test>", 250, "2.1.5"),
        ("RCPT TO:<c@example.test>", 452, "4.5.3"),
        ("RCPT TO:<d@example.test> NOTIFY=NEVER", 555, "5.5.4"),
        ("RSET", 250, "2.0.0"),
        ("DATA", 503, "5.5.1"),
        ("MAIL FROM:<not an address>", 553, "5.1.7"),
        ("MAIL FROM:<app@example.test> RET=FULL", 555, "5.5.4"),
        ("VRFY ops", 252, "2.5.0"),
        ("HELP", 214, "2.0.0"),
        ("EXPN list", 502, "5.5.1"),
        ("FOO bar", 500, "5.5.2"),
        ("NOOP", 250, "2.0.0"),
        // SMTPUTF8: an internationalised address needs it.
        ("MAIL FROM:<jörg@exämple.test>", 553, "5.6.7"),
        ("MAIL FROM:<jörg@exämple.test> SMTPUTF8", 250, "2.1.0"),
        ("RCPT TO:<zoë@example.test>", 250, "2.1.5"),
        ("DATA", 354, ""),
    ])
    .await;
    smtp.send(stuffed("Subject: grüße\r\n\r\nhallo\r\n".as_bytes()))
        .await;
    expect(&smtp.read().await.unwrap(), 250, "2.0.0");
    smtp.expect_replies(&[
        ("MAIL FROM:<app@example.test>", 250, "2.1.0"),
        ("RCPT TO:<zoë@example.test>", 553, "5.6.7"),
        ("QUIT", 221, "2.0.0"),
    ])
    .await;
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
async fn parameters_the_rfcs_do_not_allow_are_refused() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.expect_replies(&[
        // Commands that take no parameters (RFC 3207 §4, RFC 5321 §4.1.1).
        ("STARTTLS now", 501, "5.5.4"),
        ("RSET x", 501, "5.5.4"),
        ("QUIT later", 501, "5.5.4"),
        // More than the 20 digits RFC 1870 allows, which would wrap.
        (
            "MAIL FROM:<app@example.test> SIZE=99999999999999999999999",
            501,
            "5.5.4",
        ),
        ("MAIL FROM:<app@example.test> SIZE=1000", 250, "2.1.0"),
        // Postmaster without a domain names no mailbox this gateway keeps.
        ("RCPT TO:<Postmaster>", 550, "5.1.1"),
        // The same mailbox in another case is one recipient.
        ("RCPT TO:<dup@example.net>", 250, "2.1.5"),
        ("RCPT TO:<DUP@EXAMPLE.NET>", 250, "2.1.5"),
        ("RCPT TO:<dup@Example.net>", 250, "2.1.5"),
        ("DATA now", 501, "5.5.4"),
        ("DATA", 354, ""),
    ])
    .await;
    smtp.send(stuffed(b"Subject: one\r\n\r\nbody\r\n")).await;
    expect(&smtp.read().await.unwrap(), 250, "2.0.0");
    let messages = server.backend.messages();
    assert_eq!(recipients(&messages[0].1), ["dup@example.net"]);
}

#[tokio::test]
async fn a_nul_octet_refuses_the_message() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    for message in [
        &b"Subject: nul\x00here\r\n\r\nbody\r\n"[..],
        &b"Subject: fine\r\n\r\nbody\x00nul\r\n"[..],
    ] {
        smtp.expect_replies(&[
            ("MAIL FROM:<app@example.test>", 250, "2.1.0"),
            ("RCPT TO:<ops@example.test>", 250, "2.1.5"),
            ("DATA", 354, ""),
        ])
        .await;
        smtp.send(stuffed(message)).await;
        let reply = smtp.read().await.unwrap();
        expect(&reply, 554, "5.6.0");
        assert!(reply.to_string().contains("NUL"), "{reply}");
    }
    assert!(server.backend.messages().is_empty());
}

#[tokio::test]
async fn stopping_finishes_the_message_in_flight_then_closes() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut idle = Smtp::connect_ehlo(server.addr).await;
    let mut busy = Smtp::connect_ehlo(server.addr).await;
    busy.begin_data("app@example.test", "ops@example.test")
        .await;
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
async fn a_client_that_stalls_in_data_is_told_421_and_nothing_is_stored() {
    let mut settings = settings();
    settings.data_timeout = Duration::from_millis(50);
    let server = start(Memory::with_connector(None), false, settings).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.begin_data("app@example.test", "ops@example.test")
        .await;
    smtp.send("Subject: half\r\n\r\nand then nothing").await;
    expect(&smtp.read().await.expect("a reply"), 421, "4.4.2");
    assert!(smtp.closed().await);
    assert!(server.backend.messages().is_empty());
}

#[tokio::test]
async fn ehlo_and_rset_end_a_transaction() {
    let server = start(Memory::with_connector(None), false, settings()).await;
    let mut smtp = Smtp::connect_ehlo(server.addr).await;
    smtp.begin_mail("app@example.test", "ops@example.test")
        .await;
    expect(&smtp.login(USER, PASSWORD).await, 503, "5.5.1");
    smtp.ehlo().await;
    expect(&smtp.command("DATA").await, 503, "5.5.1");
    expect(
        &smtp.command("MAIL FROM:<app@example.test>").await,
        250,
        "2.1.0",
    );
    expect(&smtp.command("RSET").await, 250, "2.0.0");
    expect(
        &smtp.command("RCPT TO:<ops@example.test>").await,
        503,
        "5.5.1",
    );
    smtp.deliver(MESSAGE).await;
    assert_eq!(server.backend.messages().len(), 1);
}
