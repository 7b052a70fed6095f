//! The SMTP client against the project's test server: per-recipient SMTPUTF8,
//! QUIT at every end, what failed sessions keep, trace marks, SIZE, TLS hints,
//! AUTH in clear and TLS names.

use std::time::Duration;

use herald_core::{EmailAddress, Mechanism, Port, Secret, Security, SmtpHost};
use herald_smtp::{
    Connection, Credentials, Envelope, ErrorKind, SmtpError, Step, Target, Tracer, Utf8Need, wire,
};
use herald_testsmtp::{Action, Command, Rule, ServerConfig, SessionEnd, TestSmtpServer, TestTls};

/// How long a test waits for the server to see something happen.
const STEP: Duration = Duration::from_secs(10);

fn target(server: &TestSmtpServer, security: Security) -> Target {
    Target::new(
        SmtpHost::parse("127.0.0.1").unwrap(),
        Port::new(server.port().into()).unwrap(),
        security,
        "client.test",
    )
}

/// A test server without TLS that takes AUTH as alice (password `secret`),
/// and a target for it that allows AUTH in clear.
async fn clear_auth_server() -> (TestSmtpServer, Target) {
    let server = TestSmtpServer::start_with(ServerConfig::new().auth("alice", "secret")).await;
    let target = Target {
        allow_plaintext_auth: true,
        ..target(&server, Security::None)
    };
    (server, target)
}

/// A test server offering STARTTLS with a new certificate for localhost and
/// 127.0.0.1; with that certificate.
async fn starttls_server() -> (TestTls, TestSmtpServer) {
    let tls = TestTls::generate(&["localhost", "127.0.0.1"]);
    let config = ServerConfig::new().starttls(tls.clone());
    (tls, TestSmtpServer::start_with(config).await)
}

/// A test server speaking TLS from the first byte, with a new certificate for
/// localhost and 127.0.0.1; with that certificate.
async fn implicit_tls_server() -> (TestTls, TestSmtpServer) {
    let tls = TestTls::generate(&["localhost", "127.0.0.1"]);
    let config = ServerConfig::new().implicit_tls(tls.clone());
    (tls, TestSmtpServer::start_with(config).await)
}

/// A connection to `server` without TLS or login, which must open.
async fn open_plain(server: &TestSmtpServer) -> Connection {
    Connection::open(&target(server, Security::None), None)
        .await
        .unwrap()
}

fn trusting(mut target: Target, tls: &TestTls) -> Target {
    target.tls.ca_pem = Some(tls.ca_pem());
    target
}

fn login(user: &str, password: &str) -> Credentials {
    Credentials {
        mechanism: Mechanism::Plain,
        username: user.into(),
        secret: Secret::new(password.to_owned()),
    }
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope {
        from: EmailAddress::parse("alerts@acme.example").unwrap(),
        to: to.iter().map(|a| EmailAddress::parse(a).unwrap()).collect(),
    }
}

fn content(subject: &str) -> Vec<u8> {
    wire::dot_stuffed(
        format!("From: alerts@acme.example\r\nTo: ops@acme.example\r\nSubject: {subject}\r\n\r\nbody\r\n")
            .as_bytes(),
    )
}

async fn open_error(target: &Target, credentials: Option<&Credentials>) -> SmtpError {
    match Connection::open(target, credentials).await {
        Ok(_) => panic!("the session should have failed"),
        Err(error) => error,
    }
}

/// Asserts that an error's text says every one of `parts`.
fn says(shown: &str, parts: &[&str]) {
    for part in parts {
        assert!(shown.contains(part), "{part:?} is missing from: {shown}");
    }
}

async fn ended_with_quit(server: &TestSmtpServer) {
    assert_eq!(
        server.wait_for_ended_sessions(1, STEP).await,
        [SessionEnd { quit: true }],
        "the session must end with QUIT"
    );
}

// Defect 2: SMTPUTF8 per transaction.

#[tokio::test]
async fn an_idn_bcc_fails_alone_against_a_server_without_smtputf8() {
    let server = TestSmtpServer::start_with(ServerConfig::new().without_smtputf8()).await;
    let mut conn = open_plain(&server).await;
    let tx = conn
        .send(
            &envelope(&["ops@acme.example", "jürgen@bücher.example"]),
            &content("hi"),
        )
        .await
        .expect("the ASCII recipient goes in a transaction of its own");
    let [ascii, idn] = tx.recipients() else {
        panic!("one outcome per recipient")
    };
    assert!(ascii.reply.is_positive() && !ascii.local, "{ascii:?}");
    assert_eq!(ascii.step, Step::Data);
    assert!(idn.local && idn.reply.is_permanent(), "{idn:?}");
    assert!(idn.reply.text.contains("SMTPUTF8"), "{}", idn.reply.text);
    assert_eq!(tx.outcome_for(1).code, 553);
    let messages = server.wait_for_messages(1, STEP).await;
    assert_eq!(messages[0].rcpt_to, ["ops@acme.example"]);
    assert!(!messages[0].smtputf8);
}

#[tokio::test]
async fn a_server_with_smtputf8_takes_everyone_in_one_transaction() {
    let server = TestSmtpServer::start().await;
    let mut conn = open_plain(&server).await;
    let tx = conn
        .send(
            &envelope(&["ops@acme.example", "jürgen@bücher.example"]),
            &content("hi"),
        )
        .await
        .unwrap();
    assert!(tx.recipients().iter().all(|r| r.reply.is_positive()));
    let messages = server.wait_for_messages(1, STEP).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].smtputf8);
}

#[tokio::test]
async fn a_non_ascii_header_section_needs_smtputf8_for_everyone_and_the_session_quits() {
    let server = TestSmtpServer::start_with(ServerConfig::new().without_smtputf8()).await;
    let mut conn = open_plain(&server).await;
    let mut message = b"To: j\xc3\xbcrgen@b\xc3\xbccher.example\r\n\r\nbody\r\n".to_vec();
    message = wire::dot_stuffed(&message);
    let error = conn
        .send(&envelope(&["ops@acme.example"]), &message)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.kind,
            ErrorKind::Utf8NotOffered {
                needed_by: Utf8Need::Header
            }
        ),
        "{error}"
    );
    // The reason names the header section, not an address the message lacks.
    assert!(error.to_string().contains("header section"), "{error}");
    assert!(error.is_permanent());
    assert_eq!(error.remote, Some(server.addr()));
    drop(conn);
    ended_with_quit(&server).await;
}

#[tokio::test]
async fn eight_bit_content_is_declared_and_never_sent_to_a_server_without_8bitmime() {
    let body = wire::dot_stuffed(b"Subject: hi\r\n\r\nh\xc3\xa9llo\r\n");
    // Offered: MAIL declares it.
    let server = TestSmtpServer::start().await;
    let mut conn = open_plain(&server).await;
    conn.send(&envelope(&["ops@acme.example"]), &body)
        .await
        .unwrap();
    let messages = server.wait_for_messages(1, STEP).await;
    assert!(
        messages[0]
            .mail_parameters
            .iter()
            .any(|p| p == "BODY=8BITMIME"),
        "{:?}",
        messages[0].mail_parameters
    );
    // A 7-bit message declares nothing.
    conn.send(&envelope(&["ops@acme.example"]), &content("plain"))
        .await
        .unwrap();
    let messages = server.wait_for_messages(2, STEP).await;
    assert!(
        !messages[1]
            .mail_parameters
            .iter()
            .any(|p| p.starts_with("BODY")),
        "{:?}",
        messages[1].mail_parameters
    );
    // Not offered: nothing is sent, and the failure is permanent and says why.
    let server = TestSmtpServer::start_with(ServerConfig::new().without_8bitmime()).await;
    let mut conn = open_plain(&server).await;
    let error = conn
        .send(&envelope(&["ops@acme.example"]), &body)
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::EightBitNotOffered),
        "{error}"
    );
    assert!(error.is_permanent(), "{error}");
    assert!(error.to_string().contains("8BITMIME"), "{error}");
    conn.send(&envelope(&["ops@acme.example"]), &content("plain"))
        .await
        .unwrap();
    let messages = server.wait_for_messages(1, STEP).await;
    assert_eq!(messages.len(), 1, "only the 7-bit message arrived");
    assert!(messages[0].data.is_ascii());
}

#[tokio::test]
async fn a_server_that_does_not_know_ehlo_is_greeted_with_helo() {
    let server = TestSmtpServer::start().await;
    // The rule answers EHLO once; the HELO after it gets the usual 250.
    server.script(
        Rule::new(
            Command::Ehlo,
            Action::Reply(502, "5.5.2 EHLO not implemented".into()),
        )
        .times(1),
    );
    let mut conn = open_plain(&server).await;
    conn.send(&envelope(&["ops@acme.example"]), &content("hello"))
        .await
        .unwrap();
    let messages = server.wait_for_messages(1, STEP).await;
    assert_eq!(messages[0].rcpt_to, ["ops@acme.example"]);
    // Without EHLO no extension is known: nothing was declared.
    assert!(
        messages[0].mail_parameters.is_empty(),
        "{:?}",
        messages[0].mail_parameters
    );
    // STARTTLS is never assumed: a target that needs it fails.
    let server = TestSmtpServer::start().await;
    server.script(
        Rule::new(
            Command::Ehlo,
            Action::Reply(500, "5.5.1 unrecognized command".into()),
        )
        .times(1),
    );
    let error = open_error(&target(&server, Security::StartTls), None).await;
    assert!(
        matches!(error.kind, ErrorKind::StartTlsNotOffered),
        "{error}"
    );
}

// Defect 3: QUIT always.

#[tokio::test]
async fn a_failed_login_ends_with_quit() {
    let (server, target) = clear_auth_server().await;
    let error = open_error(&target, Some(&login("alice", "wrong"))).await;
    assert_eq!(error.step, Step::Auth);
    ended_with_quit(&server).await;
}

#[tokio::test]
async fn starttls_not_offered_ends_with_quit() {
    let server = TestSmtpServer::start().await;
    let error = open_error(&target(&server, Security::StartTls), None).await;
    assert!(
        matches!(error.kind, ErrorKind::StartTlsNotOffered),
        "{error}"
    );
    ended_with_quit(&server).await;
}

#[tokio::test]
async fn a_refused_ehlo_ends_with_quit() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(
        Command::Ehlo,
        Action::Reply(554, "5.7.1 go away".into()),
    ));
    let error = open_error(&target(&server, Security::None), None).await;
    assert_eq!(error.step, Step::Ehlo);
    ended_with_quit(&server).await;
}

#[tokio::test]
async fn a_closed_connection_says_quit_without_being_awaited() {
    let server = TestSmtpServer::start().await;
    let conn = open_plain(&server).await;
    conn.close();
    ended_with_quit(&server).await;
}

// Defect 4: what a failed session knew.

#[tokio::test]
async fn a_refused_login_after_starttls_keeps_the_remote_and_tls() {
    let tls = TestTls::generate(&["localhost", "127.0.0.1"]);
    let server = TestSmtpServer::start_with(
        ServerConfig::new()
            .starttls(tls.clone())
            .auth("alice", "secret"),
    )
    .await;
    let target = trusting(target(&server, Security::StartTls), &tls);
    let error = open_error(&target, Some(&login("alice", "wrong"))).await;
    assert_eq!(error.reply().map(|r| r.code), Some(535));
    assert_eq!(error.remote, Some(server.addr()));
    assert_eq!(
        error.tls.as_ref().map(|t| t.version.as_str()),
        Some("TLSv1.3")
    );
}

#[tokio::test]
async fn a_tls_failure_keeps_the_remote() {
    let (_, server) = implicit_tls_server().await;
    let error = open_error(&target(&server, Security::Tls), None).await;
    assert_eq!(error.step, Step::Tls);
    assert_eq!(error.remote, Some(server.addr()));
    assert!(error.tls.is_none());
}

// Defect 5: trace marks.

#[tokio::test]
async fn a_refused_login_is_traced_as_one_failing_step() {
    let (_server, target) = clear_auth_server().await;
    let tracer = Tracer::default();
    Connection::open_traced(&target, Some(&login("alice", "wrong")), &tracer)
        .await
        .err()
        .expect("a wrong password fails");
    let steps = tracer.steps();
    let failing: Vec<_> = steps.iter().filter(|s| !s.ok).collect();
    assert_eq!(failing.len(), 1, "{steps:#?}");
    assert_eq!(failing[0].step, Step::Auth);
    assert!(failing[0].detail.contains("535"), "{steps:#?}");
    assert!(
        !steps.iter().any(|s| s.ok && s.detail.starts_with("535")),
        "{steps:#?}"
    );
}

#[tokio::test]
async fn a_refused_recipient_session_marks_rcpt_and_data_and_labels_rset() {
    let server = TestSmtpServer::start().await;
    server.script(Rule::new(
        Command::Rcpt,
        Action::Reply(550, "5.1.1 no such user".into()),
    ));
    let tracer = Tracer::default();
    let mut conn = Connection::open_traced(&target(&server, Security::None), None, &tracer)
        .await
        .unwrap();
    let tx = conn
        .send(&envelope(&["gone@acme.example"]), &content("hi"))
        .await
        .unwrap();
    assert_eq!(tx.outcome_for(0).code, 550);
    let steps: Vec<(Step, bool)> = tracer.steps().iter().map(|s| (s.step, s.ok)).collect();
    assert!(steps.contains(&(Step::Rcpt, false)), "{steps:?}");
    assert!(steps.contains(&(Step::Data, false)), "{steps:?}");
    assert_eq!(steps.last(), Some(&(Step::Rset, true)), "{steps:?}");
    assert!(!steps.contains(&(Step::Data, true)), "{steps:?}");
}

// Defect 6: SIZE.

#[tokio::test]
async fn mail_from_declares_the_size_the_server_advertises_for() {
    let server = TestSmtpServer::start().await;
    let mut conn = open_plain(&server).await;
    let data = content("sized");
    conn.send(&envelope(&["ops@acme.example"]), &data)
        .await
        .unwrap();
    let message = &server.wait_for_messages(1, STEP).await[0];
    let declared = format!("SIZE={}", message.data.len());
    assert_eq!(message.mail_parameters, [declared]);
}

#[tokio::test]
async fn no_size_is_declared_to_a_server_without_size() {
    let server = TestSmtpServer::start_with(ServerConfig::new().without_size()).await;
    let mut conn = open_plain(&server).await;
    conn.send(&envelope(&["ops@acme.example"]), &content("hi"))
        .await
        .unwrap();
    assert!(
        server.wait_for_messages(1, STEP).await[0]
            .mail_parameters
            .is_empty()
    );
}

#[tokio::test]
async fn a_message_over_the_advertised_size_is_refused_before_mail() {
    let server = TestSmtpServer::start_with(ServerConfig::new().max_message_size(100)).await;
    let mut conn = open_plain(&server).await;
    let data = content(&"x".repeat(200));
    let error = conn
        .send(&envelope(&["ops@acme.example"]), &data)
        .await
        .unwrap_err();
    assert!(error.is_permanent());
    let size = wire::declared_size(&data);
    assert!(
        matches!(error.kind, ErrorKind::TooBig { limit: 100, .. }),
        "{error}"
    );
    let shown = error.to_string();
    assert!(
        shown.contains(&size.to_string()) && shown.contains("100"),
        "{shown}"
    );
    assert!(
        !server.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        server.commands()
    );
}

// TLS failures with hints.

#[tokio::test]
async fn implicit_tls_on_a_plaintext_port_says_so() {
    let server = TestSmtpServer::start().await;
    let error = open_error(&target(&server, Security::Tls), None).await;
    says(
        &error.to_string(),
        &["the server did not start TLS", "security: starttls"],
    );
}

#[tokio::test]
async fn a_greeting_timeout_suggests_implicit_tls() {
    let (_, server) = implicit_tls_server().await;
    let mut target = target(&server, Security::StartTls);
    target.timeouts.command = Duration::from_millis(300);
    let error = open_error(&target, None).await;
    assert_eq!(error.step, Step::Greeting);
    says(&error.to_string(), &["implicit TLS (security: tls)"]);
}

#[tokio::test]
async fn an_untrusted_certificate_names_its_subject_issuer_and_tls_ca_pem() {
    let (_, server) = starttls_server().await;
    let error = open_error(&target(&server, Security::StartTls), None).await;
    says(
        &error.to_string(),
        &[
            "subject CN=localhost",
            "issuer CN=herald-testsmtp test CA",
            "tls_ca_pem",
        ],
    );
}

#[tokio::test]
async fn a_certificate_for_other_names_lists_them_and_tls_server_name() {
    let (tls, server) = starttls_server().await;
    let mut target = trusting(target(&server, Security::StartTls), &tls);
    target.tls.server_name = Some("mail.acme.example".into());
    says(
        &open_error(&target, None).await.to_string(),
        &[
            "valid for localhost, 127.0.0.1, not for mail.acme.example",
            "tls_server_name",
        ],
    );
}

#[tokio::test]
async fn an_expired_certificate_says_when() {
    let tls = TestTls::expired(&["localhost", "127.0.0.1"]);
    let server = TestSmtpServer::start_with(ServerConfig::new().starttls(tls.clone())).await;
    let target = trusting(target(&server, Security::StartTls), &tls);
    says(
        &open_error(&target, None).await.to_string(),
        &["expired on", "2001"],
    );
}

// AUTH in clear.

#[tokio::test]
async fn auth_in_clear_is_refused_unless_allowed() {
    let server = TestSmtpServer::start_with(ServerConfig::new().auth("alice", "secret")).await;
    let error = open_error(
        &target(&server, Security::None),
        Some(&login("alice", "secret")),
    )
    .await;
    assert!(
        matches!(error.kind, ErrorKind::PlaintextAuthRefused { .. }),
        "{error}"
    );
    says(&error.to_string(), &["allow_plaintext_auth"]);
    assert!(!server.commands().iter().any(|c| c.starts_with("AUTH")));
    ended_with_quit(&server).await;
}

#[tokio::test]
async fn auth_in_clear_when_allowed_is_traced_with_a_warning() {
    let (_server, target) = clear_auth_server().await;
    let tracer = Tracer::default();
    Connection::open_traced(&target, Some(&login("alice", "secret")), &tracer)
        .await
        .unwrap();
    assert!(
        tracer
            .steps()
            .iter()
            .any(|s| s.step == Step::Auth && s.detail.starts_with("warning:")),
        "{:#?}",
        tracer.steps()
    );
}

#[tokio::test]
async fn auth_not_offered_mentions_starttls_when_the_server_offers_it() {
    let (_, server) = starttls_server().await;
    let mut target = target(&server, Security::None);
    target.allow_plaintext_auth = true;
    let error = open_error(&target, Some(&login("alice", "secret"))).await;
    says(
        &error.to_string(),
        &[
            "the server offers no authentication at all",
            "requires authentication",
            "it offers STARTTLS",
        ],
    );
}

// TLS names.

#[tokio::test]
async fn tls_parameters_use_the_names_postfix_shows() {
    let (tls, server) = starttls_server().await;
    let conn = Connection::open(&trusting(target(&server, Security::StartTls), &tls), None)
        .await
        .unwrap();
    let info = conn.tls().expect("TLS is up");
    assert_eq!(info.version, "TLSv1.3");
    assert!(
        info.cipher.starts_with("TLS_") && !info.cipher.starts_with("TLS13"),
        "{info:?}"
    );
}
