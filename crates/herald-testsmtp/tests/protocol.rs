//! Plaintext SMTP behaviour of the test server: pipelining, scripting, DATA handling.

mod common;

use std::time::Duration;

use common::{Client, STEP, connect, connect_ehlo};
use herald_testsmtp::{Action, Command, Rule, ServerConfig, TestSmtpServer};

#[tokio::test]
async fn greeting_and_ehlo_advertise_extensions() {
    let server = TestSmtpServer::start().await;
    let mut client = connect(server.addr()).await;
    let greeting = client.read_reply().await;
    assert_eq!(greeting.code, 220);
    assert_eq!(greeting.text(), "herald-testsmtp ESMTP ready");

    let ehlo = client.cmd("EHLO client.test").await;
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines[0], "herald-testsmtp");
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE 52428800",
    ] {
        assert!(
            ehlo.lines.iter().any(|l| l == ext),
            "missing {ext}: {ehlo:?}"
        );
    }
    assert!(
        !ehlo
            .lines
            .iter()
            .any(|l| l == "STARTTLS" || l.starts_with("AUTH"))
    );

    let helo = client.cmd("HELO client.test").await;
    assert_eq!((helo.code, helo.lines.len()), (250, 1));
    assert_eq!(client.cmd("NOOP").await.text(), "2.0.0 ok");
    assert_eq!(server.connections(), 1);
    assert_eq!(server.port(), server.addr().port());
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = TestSmtpServer::start().await;
    let mut client = connect_ehlo(server.addr()).await;
    client
        .send("MAIL FROM:<sender@example.com> SIZE=100\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        .await;
    let replies = [
        client.read_reply().await,
        client.read_reply().await,
        client.read_reply().await,
        client.read_reply().await,
    ];
    let got: Vec<(u16, &str)> = replies.iter().map(|r| (r.code, r.text())).collect();
    assert_eq!(
        got,
        [
            (250, "2.1.0 sender ok"),
            (250, "2.1.5 recipient ok"),
            (250, "2.1.5 recipient ok"),
            (354, "end data with <CR><LF>.<CR><LF>"),
        ]
    );
    // The body, the final dot and QUIT in one write as well.
    client
        .send("Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .await;
    assert_eq!(client.read_reply().await.text(), "2.0.0 queued as 1");
    assert_eq!(client.read_reply().await.code, 221);
    assert!(client.is_closed().await);

    let messages = server.wait_for_messages(1, STEP).await;
    assert_eq!(messages[0].mail_from, "sender@example.com");
    assert_eq!(messages[0].rcpt_to, ["a@example.com", "b@example.com"]);
    assert_eq!(messages[0].data, b"Subject: hi\r\n\r\nhello\r\n");
    assert_eq!(messages[0].header("subject").as_deref(), Some("hi"));
    assert_eq!(messages[0].body(), b"hello\r\n");
    assert!(!messages[0].tls);
    assert_eq!(messages[0].authenticated_as, None);
    assert_eq!(
        server.commands(),
        [
            "EHLO client.test",
            "MAIL FROM:<sender@example.com> SIZE=100",
            "RCPT TO:<a@example.com>",
            "RCPT TO:<b@example.com>",
            "DATA",
            "QUIT",
        ]
    );
}

/// Runs a whole transaction with the given recipients, returning the replies to each
/// RCPT and the reply after the final dot (if DATA was accepted).
async fn transaction(
    client: &mut Client<tokio::net::TcpStream>,
    rcpts: &[&str],
) -> (Vec<u16>, Option<u16>) {
    assert_eq!(client.cmd("MAIL FROM:<s@example.com>").await.code, 250);
    let mut codes = Vec::new();
    for rcpt in rcpts {
        codes.push(client.cmd(&format!("RCPT TO:<{rcpt}>")).await.code);
    }
    let data = client.cmd("DATA").await;
    if data.code != 354 {
        client.cmd("RSET").await;
        return (codes, None);
    }
    client.send("Subject: t\r\n\r\nbody\r\n.\r\n").await;
    (codes, Some(client.read_reply().await.code))
}

#[tokio::test]
async fn scripted_rcpt_rejection_leaves_other_recipients() {
    let server = TestSmtpServer::start().await;
    server.script(
        Rule::new(
            Command::Rcpt,
            Action::Reply(550, "5.1.1 no such user".into()),
        )
        .matching("BAD@example"),
    );
    let mut client = connect_ehlo(server.addr()).await;
    let (rcpt_codes, end) =
        transaction(&mut client, &["good@example.com", "bad@example.com"]).await;
    assert_eq!(rcpt_codes, [250, 550]);
    assert_eq!(end, Some(250));
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["good@example.com"]);

    // With only rejected recipients, DATA has nobody to deliver to.
    let (rcpt_codes, end) = transaction(&mut client, &["bad@example.com"]).await;
    assert_eq!((rcpt_codes, end), (vec![550], None));
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn times_limits_a_rule_then_defaults_return() {
    let server = TestSmtpServer::start().await;
    server.script(
        Rule::new(
            Command::Mail,
            Action::Reply(451, "4.3.0 try again later".into()),
        )
        .times(1),
    );
    let mut client = connect_ehlo(server.addr()).await;
    let first = client.cmd("MAIL FROM:<s@example.com>").await;
    assert_eq!((first.code, first.text()), (451, "4.3.0 try again later"));
    assert_eq!(client.cmd("MAIL FROM:<s@example.com>").await.code, 250);

    // clear_script removes rules that would otherwise still match.
    server.script(Rule::new(Command::Rset, Action::Reply(500, "nope".into())));
    server.clear_script();
    assert_eq!(client.cmd("RSET").await.code, 250);
}

#[tokio::test]
async fn data_end_rejection_is_not_recorded() {
    let server = TestSmtpServer::start().await;
    server.script(
        Rule::new(
            Command::DataEnd,
            Action::Reply(554, "5.7.1 rejected".into()),
        )
        .matching("spam@")
        .times(1),
    );
    let mut client = connect_ehlo(server.addr()).await;
    assert_eq!(
        transaction(&mut client, &["spam@example.com"]).await.1,
        Some(554)
    );
    assert_eq!(
        transaction(&mut client, &["ham@example.com"]).await.1,
        Some(250)
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["ham@example.com"]);
}

#[tokio::test]
async fn drop_mid_data_closes_the_connection() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Data, Action::DropMidData));
    let mut client = connect_ehlo(server.addr()).await;
    client.begin_data("s@example.com", "r@example.com").await;
    client.send("Subject: partial\r\n").await;
    assert!(client.is_closed().await);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn drop_closes_without_reply() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Mail, Action::Drop));
    let mut client = connect_ehlo(server.addr()).await;
    client.send("MAIL FROM:<s@example.com>\r\n").await;
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn stall_sends_nothing_and_does_not_block_others() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Mail, Action::Stall).times(1));
    let mut stalled = connect_ehlo(server.addr()).await;
    stalled.send("MAIL FROM:<s@example.com>\r\n").await;

    // Meanwhile another connection is served normally.
    let mut other = connect_ehlo(server.addr()).await;
    assert_eq!(
        transaction(&mut other, &["r@example.com"]).await.1,
        Some(250)
    );

    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::io::AsyncBufReadExt::read_line(
            &mut tokio::io::BufReader::new(stalled.into_inner()),
            &mut line,
        ),
    )
    .await;
    assert!(read.is_err(), "stalled connection replied: {line:?}");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn dot_stuffing_is_removed_and_raw_bytes_kept() {
    let server = TestSmtpServer::start().await;
    let mut client = connect_ehlo(server.addr()).await;
    client.begin_data("", "r@example.com").await;
    // A stuffed body: "..x" stands for ".x", ".." for a lone dot, and ". " is a
    // badly stuffed line whose first dot RFC 5321 still removes.
    let raw = "Subject: dots\r\n\r\n..leading dot\r\n...\r\nmid.\r\n..\r\nline\r\n. \r\n";
    client.send(format!("{raw}.\r\n")).await;
    assert_eq!(client.read_reply().await.code, 250);

    let message = &server.wait_for_messages(1, STEP).await[0];
    assert_eq!(message.mail_from, "");
    assert_eq!(message.raw_data, raw.as_bytes());
    assert_eq!(
        message.data,
        b"Subject: dots\r\n\r\n.leading dot\r\n..\r\nmid.\r\n.\r\nline\r\n \r\n"
    );
}

#[tokio::test]
async fn bare_lf_dot_does_not_end_data() {
    let server = TestSmtpServer::start().await;
    let mut client = connect_ehlo(server.addr()).await;
    client.begin_data("s@example.com", "r@example.com").await;
    // "\n.\r\n" is not CRLF.CRLF, so the message continues (an SMTP smuggling probe).
    client.send("one\n.\r\ntwo\r\n.\r\n").await;
    assert_eq!(client.read_reply().await.code, 250);
    assert_eq!(server.messages()[0].data, b"one\n.\r\ntwo\r\n");
}

#[tokio::test]
async fn empty_message_and_sequence_errors() {
    let server = TestSmtpServer::start().await;
    let mut client = connect(server.addr()).await;
    client.read_reply().await;
    let reply = client.cmd("MAIL FROM:<s@example.com>").await;
    assert_eq!((reply.code, reply.text()), (503, "5.5.1 send EHLO first"));
    let reply = client.cmd("FROB").await;
    assert_eq!(
        (reply.code, reply.text()),
        (500, "5.5.2 command not recognized")
    );
    client.cmd("EHLO client.test").await;
    assert_eq!(client.cmd("RCPT TO:<r@example.com>").await.code, 503);
    assert_eq!(client.cmd("MAIL FROM:<s@example.com>").await.code, 250);
    let reply = client.cmd("DATA").await;
    assert_eq!(
        (reply.code, reply.text()),
        (554, "5.5.1 no valid recipients")
    );
    assert_eq!(client.cmd("RSET").await.code, 250);
    // RSET ended the transaction, so RCPT needs a new MAIL.
    assert_eq!(client.cmd("RCPT TO:<r@example.com>").await.code, 503);

    client.begin_data("s@example.com", "r@example.com").await;
    assert_eq!(client.cmd(".").await.code, 250);
    assert!(server.messages()[0].data.is_empty());
    let bye = client.cmd("QUIT").await;
    assert_eq!((bye.code, bye.text()), (221, "2.0.0 bye"));
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let server = TestSmtpServer::start_with(ServerConfig::default().max_message_size(10)).await;
    let mut client = connect_ehlo(server.addr()).await;
    assert_eq!(
        client.cmd("MAIL FROM:<s@example.com> SIZE=11").await.code,
        552
    );
    client.cmd("MAIL FROM:<s@example.com>").await;
    client.cmd("RCPT TO:<r@example.com>").await;
    client.cmd("DATA").await;
    client.send("0123456789abcdef\r\n.\r\n").await;
    assert_eq!(client.read_reply().await.code, 552);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn scripted_greeting_and_multiline_replies() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Connect, Action::Reply(421, "4.3.2 busy".into())).times(1));
    server.script(Rule::new(
        Command::Ehlo,
        Action::Reply(250, "custom\nPIPELINING".into()),
    ));
    let mut client = connect(server.addr()).await;
    assert_eq!(client.read_reply().await.code, 421);
    assert!(client.is_closed().await);

    let mut client = connect(server.addr()).await;
    assert_eq!(client.read_reply().await.code, 220);
    let ehlo = client.cmd("EHLO client.test").await;
    assert_eq!(ehlo.lines, ["custom", "PIPELINING"]);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn wait_for_messages_returns_once_enough_arrive() {
    let server = TestSmtpServer::start().await;
    let addr = server.addr();
    let sender = tokio::spawn(async move {
        let mut client = connect_ehlo(addr).await;
        for _ in 0..2 {
            transaction(&mut client, &["r@example.com"]).await;
        }
    });
    let messages = server.wait_for_messages(2, STEP).await;
    assert_eq!(messages.len(), 2);
    sender.await.expect("sender task");
}

#[tokio::test]
#[should_panic(expected = "0 arrived")]
async fn wait_for_messages_panics_on_timeout() {
    let server = TestSmtpServer::start().await;
    server.wait_for_messages(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn dropping_the_server_closes_connections() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Mail, Action::Stall));
    let mut client = connect_ehlo(server.addr()).await;
    client.send("MAIL FROM:<s@example.com>\r\n").await;
    drop(server);
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn ended_sessions_say_whether_the_client_quit() {
    let server = TestSmtpServer::start().await;
    let mut polite = connect_ehlo(server.addr()).await;
    assert_eq!(polite.cmd("QUIT").await.code, 221);
    assert_eq!(
        server.wait_for_ended_sessions(1, STEP).await,
        [herald_testsmtp::SessionEnd { quit: true }]
    );
    let rude = connect_ehlo(server.addr()).await;
    drop(rude);
    let ended = server.wait_for_ended_sessions(2, STEP).await;
    assert_eq!(ended[1], herald_testsmtp::SessionEnd { quit: false });
}

#[tokio::test]
async fn mail_parameters_are_recorded_and_size_can_go_unadvertised() {
    let server = TestSmtpServer::start_with(ServerConfig::default().without_size()).await;
    let mut client = connect(server.addr()).await;
    client.read_reply().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("SIZE")),
        "{ehlo:?}"
    );
    assert_eq!(
        client
            .cmd("MAIL FROM:<s@example.com> SIZE=17 BODY=8BITMIME")
            .await
            .code,
        250
    );
    client.cmd("RCPT TO:<r@example.com>").await;
    assert_eq!(client.cmd("DATA").await.code, 354);
    client.send("Subject: p\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(client.read_reply().await.code, 250);
    let message = &server.wait_for_messages(1, STEP).await[0];
    assert_eq!(message.mail_parameters, ["SIZE=17", "BODY=8BITMIME"]);
}

#[tokio::test]
async fn delay_sends_the_default_reply_once_over() {
    let pause = Duration::from_millis(50);
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(Command::Connect, Action::Delay(pause)));
    server.script(Rule::new(Command::DataEnd, Action::Delay(pause)).matching("slow@"));
    let mut client = connect(server.addr()).await;
    let greeting = client.read_reply().await;
    assert_eq!(
        (greeting.code, greeting.text()),
        (220, "herald-testsmtp ESMTP ready")
    );
    assert_eq!(client.cmd("EHLO client.test").await.code, 250);
    client.begin_data("s@example.com", "slow@example.com").await;
    let sent = std::time::Instant::now();
    client.send("Subject: t\r\n\r\nbody\r\n.\r\n").await;
    let reply = client.read_reply().await;
    // The server's own sleep, not the test's: the reply cannot come sooner.
    assert!(
        sent.elapsed() >= pause,
        "answered before the delay was over"
    );
    assert_eq!((reply.code, reply.text()), (250, "2.0.0 queued as 1"));
    assert_eq!(server.messages()[0].rcpt_to, ["slow@example.com"]);
    // Only the matching transaction is delayed; the next is answered as usual.
    assert_eq!(
        transaction(&mut client, &["quick@example.com"]).await.1,
        Some(250)
    );
    assert_eq!(server.messages().len(), 2);
}
