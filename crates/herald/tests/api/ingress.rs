//! SMTP ingress end to end: real clients (Python's smtplib, swaks, a raw
//! socket) submit to a node's SMTP listener, and the mail reaches the
//! tenant's provider (a test SMTP server) through the store and the worker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use herald_testkit::{Dependency, require};
use herald_testsmtp::{Action, Command, ReceivedMessage, Rule, TestSmtpServer, TestTls};
use mail_parser::MimeHeaders;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::helpers::*;

// Clients.

/// Whether `python3` runs; when it does not, the test is skipped (or fails,
/// when the run requires Python).
fn python_runs() -> bool {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"));
    require(Dependency::Python, found).is_some()
}

/// Runs one smtplib session (`assets/smtp_client.py`) against the listener at
/// `addr` as `spec` describes it; returns the replies it printed.
async fn smtplib(addr: SocketAddr, mut spec: Value) -> Value {
    spec["port"] = addr.port().into();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/assets/smtp_client.py"
    );
    let printed = python3("smtplib", [script, &spec.to_string()]).await;
    serde_json::from_slice(&printed).unwrap_or_else(|e| {
        panic!(
            "smtplib printed no JSON ({e}): {}",
            String::from_utf8_lossy(&printed)
        )
    })
}

/// A message for [`smtplib`]: envelope and text.
fn envelope(from: &str, to: &[&str], text: &str) -> Value {
    json!({"from": from, "to": to, "text": text})
}

/// A short plain-text message with these header fields.
fn plain_message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nThis is {subject}.\r\n"
    )
}

/// The message id in a `250 2.0.0 Ok: queued as <id>` reply to DATA.
fn queued_id(outcome: &Value) -> String {
    let reply = &outcome["data"];
    assert_eq!(reply[0], 250, "the message was not accepted: {outcome}");
    reply[1]
        .as_str()
        .and_then(|text| text.rsplit(' ').next())
        .expect("an id in the reply")
        .to_owned()
}

/// The EHLO keywords smtplib saw (lowercase), before or after STARTTLS.
fn keywords(out: &Value, which: &str) -> Vec<String> {
    out[which]
        .as_array()
        .unwrap_or_else(|| panic!("no {which} in {out}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that `reply` is `[code, "<enhanced> …"]`.
fn assert_reply(reply: &Value, code: u16, enhanced: &str) {
    assert_eq!(reply[0], code, "{reply}");
    assert!(
        reply[1]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{enhanced} "))),
        "{reply}"
    );
}

/// Writes the CA of `tls` into `dir`; returns the file's path for smtplib.
fn ca_file(tls: &TestTls, dir: &Path) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, tls.ca_pem()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// An SMTP connection written to byte for byte, for what library clients
/// will not send: pipelined commands in one write, bare CR and LF.
struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Raw {
    /// Connects and reads the greeting.
    async fn connect(addr: SocketAddr) -> Raw {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw {
            reader: BufReader::new(read),
            writer,
        };
        assert_eq!(raw.reply().await.0, 220);
        raw
    }

    /// Connects and says EHLO; returns the session and the EHLO reply's lines.
    async fn ehlo(addr: SocketAddr) -> (Raw, Vec<String>) {
        let mut raw = Raw::connect(addr).await;
        raw.send(b"EHLO client.test\r\n").await;
        let (code, lines) = raw.reply().await;
        assert_eq!(code, 250, "{lines:?}");
        (raw, lines)
    }

    /// Writes `bytes` in one write.
    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// The next reply: its code and its lines' texts.
    async fn reply(&mut self) -> (u16, Vec<String>) {
        self.next_reply()
            .await
            .expect("a reply, not the end of the connection")
    }

    /// The next reply, or `None` when the server closed the connection.
    async fn next_reply(&mut self) -> Option<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line))
                .await
                .expect("a reply within the deadline")
                .ok()?;
            if read == 0 {
                return None;
            }
            let line = line.trim_end();
            let code = line[..3].parse().unwrap_or_else(|_| panic!("{line:?}"));
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((code, lines));
            }
        }
    }

    /// The codes of the next `n` replies.
    async fn codes(&mut self, n: usize) -> Vec<u16> {
        let mut codes = Vec::new();
        for _ in 0..n {
            codes.push(self.reply().await.0);
        }
        codes
    }
}

/// A node with its SMTP listener and tenant acme sending to `smtp`.
async fn listener_sending_to(smtp: &TestSmtpServer) -> (TestApp, TestTenant) {
    let app = spawn_app_with_smtp(None, |_| {}).await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    (app, acme)
}

/// A test SMTP server, and a node with its SMTP listener whose tenant acme
/// sends to that server: for a test that talks to the listener with
/// smtplib. `None` when python3 does not run (the test is then skipped).
async fn listener_for_smtplib() -> Option<(TestSmtpServer, TestApp, TestTenant)> {
    if !python_runs() {
        return None;
    }
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = listener_sending_to(&smtp).await;
    Some((smtp, app, acme))
}

/// Every address the server was sent mail for, sorted.
fn all_recipients(messages: &[ReceivedMessage]) -> Vec<String> {
    let mut all: Vec<String> = messages.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    all.sort();
    all
}

/// The message's recipients' addresses, sorted.
fn view_recipients(view: &Value) -> Vec<String> {
    let mut all: Vec<String> = view["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

// Authentication and who is sending.

#[tokio::test]
async fn starttls_then_plain_or_login_delivers_and_the_view_names_the_credential() {
    if !python_runs() {
        return;
    }
    for mechanism in ["PLAIN", "LOGIN"] {
        let tls = TestTls::generate(&["127.0.0.1"]);
        let smtp = TestSmtpServer::start().await;
        // As for a remote client: AUTH only under TLS.
        let app = spawn_app_with_smtp(Some(&tls), |s| s.loopback_is_local = false).await;
        let acme = app.tenant_sending_to("acme", smtp.port()).await;
        let login = app.smtp_credential(&acme).await;
        let subject = format!("Submitted with AUTH {mechanism}");
        let text = plain_message("app@acme.example", "ops@acme.example", &subject);
        let spec = json!({
            "ca": ca_file(&tls, app.dir.path()),
            "auth": [mechanism, login.username, login.password],
            "messages": [envelope("app@acme.example", &["ops@acme.example"], &text)],
        });
        let out = smtplib(app.smtp_addr(), spec).await;

        let before = keywords(&out, "features");
        assert!(before.contains(&"starttls".to_owned()), "{out}");
        assert!(!before.contains(&"auth".to_owned()), "{out}");
        assert!(keywords(&out, "tls_features").contains(&"auth".to_owned()));
        assert_reply(&out["auth"], 235, "2.7.0");
        let id = queued_id(&out["messages"][0]);

        let received = smtp.wait_for_messages(1, DEADLINE).await;
        assert_eq!(received[0].rcpt_to, ["ops@acme.example"], "{mechanism}");
        assert_eq!(received[0].header("Subject"), Some(subject.clone()));
        let view = app.wait_for_status(&acme, &id, "sent").await;
        assert_eq!(view["source"], "smtp", "{view}");
        assert_eq!(view["subject"], subject.as_str());
        assert_eq!(view["smtp"]["credential_id"], login.id.as_str(), "{view}");
        assert_eq!(view["smtp"]["client_addr"], "127.0.0.1", "{view}");
        assert!(view["smtp"].get("connector_id").is_none(), "{view}");
    }
}

#[tokio::test]
async fn implicit_tls_takes_auth_at_once_and_delivers() {
    if !python_runs() {
        return;
    }
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with_smtp(Some(&tls), |s| {
        s.loopback_is_local = false;
        s.smtps_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;
    let text = plain_message("app@acme.example", "ops@acme.example", "Over SMTPS");
    let spec = json!({
        "implicit_tls": true,
        "ca": ca_file(&tls, app.dir.path()),
        "auth": ["PLAIN", login.username, login.password],
        "messages": [envelope("app@acme.example", &["ops@acme.example"], &text)],
    });
    let out = smtplib(app.smtps_addr(), spec).await;
    let offered = keywords(&out, "features");
    assert!(offered.contains(&"auth".to_owned()), "{out}");
    assert!(!offered.contains(&"starttls".to_owned()), "{out}");
    assert_reply(&out["auth"], 235, "2.7.0");
    let id = queued_id(&out["messages"][0]);
    let view = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(view["smtp"]["credential_id"], login.id.as_str(), "{view}");
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].header("Subject").as_deref(), Some("Over SMTPS"));
}

#[tokio::test]
async fn without_tls_a_remote_client_is_not_offered_auth_and_mail_needs_it() {
    if !python_runs() {
        return;
    }
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with_smtp(None, |s| s.loopback_is_local = false).await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;
    let text = plain_message("app@acme.example", "ops@acme.example", "Refused");
    let spec = json!({
        "auth": ["PLAIN", login.username, login.password],
        "messages": [envelope("app@acme.example", &["ops@acme.example"], &text)],
    });
    let out = smtplib(app.smtp_addr(), spec).await;

    let offered = keywords(&out, "features");
    assert!(!offered.contains(&"auth".to_owned()), "{out}");
    assert!(!offered.contains(&"starttls".to_owned()), "{out}");
    // Trying anyway does not log in: the password would travel in clear.
    let auth = out["auth"][0].as_u64().unwrap();
    assert!((500..600).contains(&auth), "{out}");
    assert_reply(&out["messages"][0]["mail"], 530, "5.7.0");
    assert!(out["messages"][0]["data"].is_null(), "{out}");
    assert_eq!(app.message_count(&acme).await, 0);
}

#[tokio::test]
async fn a_connector_admits_its_network_until_deleted_and_a_revoked_credential_fails() {
    let Some((smtp, app, acme)) = listener_for_smtplib().await else {
        return;
    };
    let addr = app.smtp_addr();
    let message = |subject: &str| {
        let text = plain_message("app@acme.example", "ops@acme.example", subject);
        envelope("app@acme.example", &["ops@acme.example"], &text)
    };

    let connector = app.smtp_connector(&acme, &["127.0.0.0/8"]).await;
    let out = smtplib(addr, json!({"messages": [message("By connector")]})).await;
    let id = queued_id(&out["messages"][0]);
    let view = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(view["source"], "smtp", "{view}");
    assert_eq!(view["smtp"]["connector_id"], connector.as_str(), "{view}");
    assert_eq!(view["smtp"]["client_addr"], "127.0.0.1", "{view}");
    assert!(view["smtp"].get("credential_id").is_none(), "{view}");
    assert_eq!(smtp.wait_for_messages(1, DEADLINE).await.len(), 1);

    // The next session after the deletion is an unknown client.
    let (status, body) = app
        .delete_as_admin(&acme, &format!("smtp-connectors/{connector}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let out = smtplib(addr, json!({"messages": [message("After deletion")]})).await;
    assert_reply(&out["messages"][0]["mail"], 530, "5.7.0");
    assert_eq!(app.message_count(&acme).await, 1);

    let login = app.smtp_credential(&acme).await;
    let auth = json!(["LOGIN", login.username, login.password]);
    let spec = json!({"auth": auth.clone(), "messages": [message("Before revocation")]});
    let out = smtplib(addr, spec).await;
    assert_reply(&out["auth"], 235, "2.7.0");
    queued_id(&out["messages"][0]);
    let (status, body) = app
        .delete_as_admin(&acme, &format!("smtp-credentials/{}", login.id))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let out = smtplib(
        addr,
        json!({"auth": auth, "messages": [message("After revocation")]}),
    )
    .await;
    assert_reply(&out["auth"], 535, "5.7.8");
    assert_reply(&out["messages"][0]["mail"], 530, "5.7.0");
    assert_eq!(app.message_count(&acme).await, 2);
}

#[tokio::test]
async fn a_credentials_rate_limit_defers_its_mail_beyond_it_and_no_one_elses() {
    let Some((_smtp, app, acme)) = listener_for_smtplib().await else {
        return;
    };
    let body = json!({"name": "chatty", "rate_limit_per_minute": 2});
    let limited = app.create_as_admin(&acme, "smtp-credentials", body).await;
    assert_eq!(limited["rate_limit_per_minute"], 2);
    let other = app.smtp_credential(&acme).await;
    let messages: Vec<Value> = (0..3)
        .map(|i| {
            let text = plain_message("app@acme.example", "ops@acme.example", &format!("m{i}"));
            envelope("app@acme.example", &["ops@acme.example"], &text)
        })
        .collect();

    let auth = json!(["PLAIN", limited["username"], limited["password"]]);
    let out = smtplib(app.smtp_addr(), json!({"auth": auth, "messages": messages})).await;
    queued_id(&out["messages"][0]);
    queued_id(&out["messages"][1]);
    assert_reply(&out["messages"][2]["mail"], 451, "4.7.0");
    assert_eq!(app.message_count(&acme).await, 2);

    let auth = json!(["PLAIN", other.username, other.password]);
    let out = smtplib(app.smtp_addr(), json!({"auth": auth, "messages": messages})).await;
    for outcome in out["messages"].as_array().unwrap() {
        queued_id(outcome);
    }
    assert_eq!(app.message_count(&acme).await, 5);
}

// The protocol through the node.

#[tokio::test]
async fn pipelined_commands_are_answered_each_and_only_accepted_recipients_get_the_mail() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = listener_sending_to(&smtp).await;
    app.smtp_connector(&acme, &["127.0.0.0/8"]).await;
    let (mut raw, ehlo) = Raw::ehlo(app.smtp_addr()).await;
    assert!(ehlo.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");

    raw.send(
        b"MAIL FROM:<app@acme.example>\r\nRCPT TO:<a@acme.example>\r\n\
          RCPT TO:<no-domain>\r\nRCPT TO:<b@acme.example>\r\nDATA\r\n",
    )
    .await;
    let codes = raw.codes(5).await;
    assert_eq!(
        [codes[0], codes[1], codes[3], codes[4]],
        [250, 250, 250, 354]
    );
    assert!((500..600).contains(&codes[2]), "{codes:?}");
    raw.send(
        b"From: app@acme.example\r\nTo: a@acme.example, b@acme.example\r\n\
          Subject: Pipelined\r\n\r\nx\r\n.\r\nQUIT\r\n",
    )
    .await;
    let (code, lines) = raw.reply().await;
    assert_eq!(code, 250, "{lines:?}");
    let id = lines[0].rsplit(' ').next().unwrap().to_owned();
    assert_eq!(raw.reply().await.0, 221);

    let view = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(view_recipients(&view), ["a@acme.example", "b@acme.example"]);
    assert_eq!(
        all_recipients(&smtp.messages()),
        ["a@acme.example", "b@acme.example"]
    );
}

/// Builds a message of a little over 10 MiB with a random 7.9 MB attachment
/// with Python's email package, as an application would; writes it to
/// `message.eml` and the attachment to `report.bin` in `dir`.
async fn python_builds_a_large_message(dir: &Path) {
    let script = r#"
import email.policy, random, sys
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
dir = sys.argv[1]
attachment = random.Random(16).randbytes(7_900_000)
message = MIMEMultipart()
message["From"] = "Acme Alerts <alerts@acme.example>"
message["To"] = "ops@acme.example"
message["Subject"] = "Quarterly report"
message.attach(MIMEText("The report is attached.\n", "plain", "utf-8"))
part = MIMEApplication(attachment, "octet-stream")
part.add_header("Content-Disposition", "attachment", filename="report.bin")
message.attach(part)
open(dir + "/message.eml", "wb").write(message.as_bytes(policy=email.policy.SMTP))
open(dir + "/report.bin", "wb").write(attachment)
"#;
    let args = ["-c", script, dir.to_str().unwrap()];
    python3("building the message with Python's email package", args).await;
}

/// A message's header section and body, split at the first empty line.
fn head_and_body(message: &[u8]) -> (&[u8], &[u8]) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section");
    (&message[..at + 2], &message[at + 4..])
}

/// The header fields (each with its folded lines, as sent) except those
/// delivery may add or change: Received, From, Sender, Reply-To, Bcc,
/// Return-Path, Message-ID and Date.
fn kept_fields(head: &[u8]) -> Vec<Vec<u8>> {
    const CHANGED: [&str; 8] = [
        "received",
        "from",
        "sender",
        "reply-to",
        "bcc",
        "return-path",
        "message-id",
        "date",
    ];
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in head.split_inclusive(|b| *b == b'\n') {
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(field)) => field.extend_from_slice(line),
            _ => fields.push(line.to_vec()),
        }
    }
    fields.retain(|field| {
        let name = field.split(|b| *b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        !CHANGED.contains(&name.as_str())
    });
    fields
}

#[tokio::test]
async fn a_ten_mib_message_with_an_attachment_is_delivered_as_received() {
    if !python_runs() {
        return;
    }
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with_smtp(None, |s| s.max_message_size = 12 * 1024 * 1024).await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;
    python_builds_a_large_message(app.dir.path()).await;
    let file = app.dir.path().join("message.eml");
    let sent = std::fs::read(&file).unwrap();
    assert!(sent.len() > 10 * 1024 * 1024, "{} octets", sent.len());

    let spec = json!({
        "auth": ["PLAIN", login.username, login.password],
        "messages": [{"from": "alerts@acme.example", "to": ["ops@acme.example"], "file": file}],
    });
    let out = smtplib(app.smtp_addr(), spec).await;
    let id = queued_id(&out["messages"][0]);
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    app.wait_for_status(&acme, &id, "sent").await;

    let (sent_head, sent_body) = head_and_body(&sent);
    let (head, body) = head_and_body(&received[0].data);
    assert!(body == sent_body, "the body arrived changed");
    assert_eq!(
        kept_fields(head),
        kept_fields(sent_head),
        "header fields other than those delivery sets arrived changed"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&received[0].data[..])
        .expect("the delivered message parses");
    let from = parsed.from().and_then(|f| f.first()).expect("a From");
    assert_eq!(from.address(), Some("alerts@acme.example"));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("The report is attached.\n")
    );
    let attachment = parsed.attachment(0).expect("the attachment");
    assert_eq!(attachment.attachment_name(), Some("report.bin"));
    let original = std::fs::read(app.dir.path().join("report.bin")).unwrap();
    assert!(
        attachment.contents() == original.as_slice(),
        "the attachment arrived changed"
    );
}

#[tokio::test]
async fn smtputf8_mail_to_an_internationalised_address_is_delivered() {
    let Some((smtp, app, acme)) = listener_for_smtplib().await else {
        return;
    };
    let login = app.smtp_credential(&acme).await;
    let subject = "Grüße aus Zürich ✓";
    let text = format!(
        "From: app@acme.example\r\nTo: zoë@acme.example\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nHallo Zoë.\r\n"
    );
    let mut message = envelope("app@acme.example", &["zoë@acme.example"], &text);
    message["options"] = json!(["SMTPUTF8"]);
    let spec = json!({"auth": ["PLAIN", login.username, login.password], "messages": [message]});
    let out = smtplib(app.smtp_addr(), spec).await;
    assert!(keywords(&out, "features").contains(&"smtputf8".to_owned()));
    let id = queued_id(&out["messages"][0]);

    let view = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(view["subject"], subject, "{view}");
    assert_eq!(view_recipients(&view), ["zoë@acme.example"]);
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, ["zoë@acme.example"]);
    assert!(received[0].smtputf8, "{:?}", received[0].mail_parameters);
    let parsed = mail_parser::MessageParser::default()
        .parse(&received[0].data[..])
        .unwrap();
    assert_eq!(parsed.subject(), Some(subject));
}

#[tokio::test]
async fn no_line_ending_trick_smuggles_a_second_message_through_the_node() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = listener_sending_to(&smtp).await;
    app.smtp_connector(&acme, &["127.0.0.0/8"]).await;
    let transaction = b"MAIL FROM:<app@acme.example>\r\nRCPT TO:<ops@acme.example>\r\nDATA\r\n";
    let tricks: [(&str, &[u8]); 6] = [
        ("\\n.\\n", b"\n.\n"),
        ("\\r.\\r", b"\r.\r"),
        ("\\n.\\r\\n", b"\n.\r\n"),
        ("\\r\\n.\\n", b"\r\n.\n"),
        ("bare LF", b"\nmore"),
        ("bare CR", b"\rmore"),
    ];
    for (name, trick) in tricks {
        let (mut raw, _) = Raw::ehlo(app.smtp_addr()).await;
        raw.send(transaction).await;
        assert_eq!(raw.codes(3).await, [250, 250, 354], "{name}");
        // After the trick, a whole second transaction, as a smuggler would
        // have a lenient server read it.
        let mut data = b"Subject: carrier\r\n\r\nfirst".to_vec();
        data.extend_from_slice(trick);
        data.extend_from_slice(transaction);
        data.extend_from_slice(b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n");
        raw.send(&data).await;
        let (code, lines) = raw.reply().await;
        assert_eq!(code, 554, "{name}: {lines:?}");
        assert!(lines[0].starts_with("5.5.2 "), "{name}: {lines:?}");

        // The session goes on: a clean message in it is taken.
        raw.send(transaction).await;
        assert_eq!(raw.codes(3).await, [250, 250, 354], "{name}");
        raw.send(b"Subject: clean\r\n\r\nok\r\n.\r\nQUIT\r\n").await;
        assert_eq!(raw.codes(2).await, [250, 221], "{name}");
        assert!(raw.next_reply().await.is_none(), "{name}: a reply too many");
    }

    let (status, list) = app.get_as_sender(&acme, "messages?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let subjects: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        vec!["clean"; tricks.len()],
        "one message per clean DATA"
    );
}

// Durability.

/// Messages answered 250 while the provider refuses are delivered after the
/// node process is SIGKILLed and started again, on `database` (PostgreSQL)
/// or the embedded SQLite file.
async fn smtp_accepted_mail_survives_sigkill(database: Option<&str>) {
    const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let smtp = TestSmtpServer::start().await;
    smtp.script(Rule::new(
        Command::Connect,
        Action::Reply(421, "4.3.2 Service not available".into()),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--smtp-listen",
        "127.0.0.1:0",
        "--retry-max",
        "1s",
        "--lease",
        "1s",
    ];
    if let Some(url) = database {
        args.extend(["--database-url", url]);
    }
    let envs = [("HERALD_MASTER_KEY", MASTER_KEY), ("HERALD_LOG", "warn")];
    let mut node = start_process(dir.path(), &args, &envs).await;
    let addr = node.smtp_addr().await;
    let app = node.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;

    // Three sessions at once, ten messages each, so that commits are shared.
    let subjects: BTreeSet<String> = (0..30).map(|i| format!("Durable {i:02}")).collect();
    let sessions = subjects
        .iter()
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|chunk| {
            let messages: Vec<Value> = chunk
                .iter()
                .map(|s| {
                    let text = plain_message("app@acme.example", "ops@acme.example", s);
                    envelope("app@acme.example", &["ops@acme.example"], &text)
                })
                .collect();
            let auth = json!(["PLAIN", login.username, login.password]);
            smtplib(addr, json!({"auth": auth, "messages": messages}))
        })
        .collect::<Vec<_>>();
    let ids: Vec<String> = futures_util::future::join_all(sessions)
        .await
        .iter()
        .flat_map(|out| out["messages"].as_array().unwrap().iter().map(queued_id))
        .collect();
    assert_eq!(ids.len(), subjects.len());
    eventually("the worker to try the provider", || async {
        (smtp.connections() >= 1).then_some(())
    })
    .await;
    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.unwrap();
    assert!(smtp.messages().is_empty());

    smtp.clear_script();
    let restarted = start_process(dir.path(), &args, &envs).await;
    let app = restarted.app();
    let received = smtp.wait_for_messages(subjects.len(), DEADLINE).await;
    let delivered: BTreeSet<String> = received
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(
        delivered, subjects,
        "every message answered 250 was delivered"
    );
    for id in &ids {
        let view = app.wait_for_status(&acme, id, "sent").await;
        assert_eq!(view["smtp"]["credential_id"], login.id.as_str(), "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_answered_250_survives_a_sigkill_on_sqlite() {
    if !python_runs() {
        return;
    }
    smtp_accepted_mail_survives_sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_answered_250_survives_a_sigkill_on_postgres() {
    if !python_runs() {
        return;
    }
    let Some(db) = herald_testkit::TestDatabase::create().await else {
        return;
    };
    smtp_accepted_mail_survives_sigkill(Some(db.url())).await;
}

// Tenants and the API.

#[tokio::test]
async fn a_tenants_smtp_credentials_and_connectors_are_its_own() {
    let Some((smtp, app, acme)) = listener_for_smtplib().await else {
        return;
    };
    let beta = app.tenant_sending_to("beta", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;

    // Mail that names beta everywhere still belongs to the credential's tenant.
    let text = plain_message("alerts@beta.example", "ops@beta.example", "Whose?");
    let spec = json!({
        "auth": ["PLAIN", login.username, login.password],
        "messages": [envelope("alerts@beta.example", &["ops@beta.example"], &text)],
    });
    let id = queued_id(&smtplib(app.smtp_addr(), spec).await["messages"][0]);
    app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(app.message_count(&beta).await, 0);
    let (status, _) = app.get_as_admin(&beta, &format!("messages/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let body = json!({"name": "acme-office", "cidrs": ["10.1.0.0/16"]});
    let connector = app.create_as_admin(&acme, "smtp-connectors", body).await;
    let connector = connector["id"].as_str().unwrap().to_owned();

    // Another tenant's administrator sees none of it, through either path.
    for rest in ["smtp-credentials", "smtp-connectors"] {
        let (status, body) = app.get(&tenant_path(&acme, rest), &beta.admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{rest}: {body}");
    }
    for rest in [
        format!("smtp-credentials/{}", login.id),
        format!("smtp-connectors/{connector}"),
    ] {
        for owner in [&acme, &beta] {
            let path = tenant_path(owner, &rest);
            let (status, body) = app
                .call(Method::DELETE, &path, Some(&beta.admin), None)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        }
    }

    // Overlapping networks: refused without a word about whose they are.
    let body = json!({"name": "beta-office", "cidrs": ["10.1.2.0/24"]});
    let (status, answer) = app.post_as_admin(&beta, "smtp-connectors", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let text = answer.to_string();
    for secret in ["acme", connector.as_str(), "10.1.0.0/16"] {
        assert!(!text.contains(secret), "the 409 names {secret}: {text}");
    }
    let (_, listed) = app.get_as_admin(&beta, "smtp-connectors").await;
    assert_eq!(listed, json!([]));

    // A sender token manages neither.
    let sender_calls = [
        (Method::GET, "smtp-credentials".to_owned(), None),
        (
            Method::POST,
            "smtp-credentials".to_owned(),
            Some(json!({"name": "mine"})),
        ),
        (
            Method::DELETE,
            format!("smtp-credentials/{}", login.id),
            None,
        ),
        (Method::GET, "smtp-connectors".to_owned(), None),
        (
            Method::POST,
            "smtp-connectors".to_owned(),
            Some(json!({"name": "mine", "cidrs": ["10.9.0.0/16"]})),
        ),
        (Method::DELETE, format!("smtp-connectors/{connector}"), None),
    ];
    for (method, rest, body) in sender_calls {
        let path = tenant_path(&acme, &rest);
        let (status, answer) = app
            .call(method.clone(), &path, Some(&acme.sender), body)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }

    // All of acme's is still there, and works.
    let (_, credentials) = app.get_as_admin(&acme, "smtp-credentials").await;
    let ids: Vec<&Value> = credentials
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [login.id.as_str()], "{credentials}");
    assert!(!credentials.to_string().contains(&login.password));
    let (_, connectors) = app.get_as_admin(&acme, "smtp-connectors").await;
    let ids: Vec<&Value> = connectors
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [connector.as_str()], "{connectors}");
}

#[tokio::test]
async fn invalid_credentials_and_connectors_are_refused_naming_the_field_and_not_stored() {
    let (app, acme) = app_with_acme().await;
    let bad_networks = [
        (json!(["10.0.0.1/8"]), "cidrs[0]"),
        (json!(["0.0.0.0/0"]), "cidrs[0]"),
        (json!([]), "cidrs"),
        // One bad network among good ones stores none of them.
        (json!(["192.0.2.0/24", "10.0.0.1/8"]), "cidrs[1]"),
    ];
    for (cidrs, field) in bad_networks {
        let body = json!({"name": "office", "cidrs": cidrs});
        let (status, answer) = app.post_as_admin(&acme, "smtp-connectors", body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{cidrs}: {answer}"
        );
        assert_names_field(&answer, field);
    }
    for name in ["", "   "] {
        let (status, answer) = app
            .post_as_admin(&acme, "smtp-credentials", json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_names_field(&answer, "name");
    }
    for rest in ["smtp-connectors", "smtp-credentials"] {
        let (status, listed) = app.get_as_admin(&acme, rest).await;
        assert_eq!((status, listed), (StatusCode::OK, json!([])), "{rest}");
    }
}

/// Asserts that a 422 answer has an error for `field`, with its rule.
fn assert_names_field(answer: &Value, field: &str) {
    let error = answer["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["field"] == field))
        .unwrap_or_else(|| panic!("no error for {field}: {answer}"));
    assert!(
        error["rule"].as_str().is_some_and(|r| !r.is_empty()),
        "{answer}"
    );
}

// Another client: swaks.

#[tokio::test]
async fn swaks_submits_with_starttls_and_auth() {
    let found = std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .map_err(|e| format!("swaks cannot run: {e}"));
    if require(Dependency::Swaks, found).is_none() {
        return;
    }
    let tls = TestTls::generate(&["127.0.0.1"]);
    let smtp = TestSmtpServer::start().await;
    // AUTH only under TLS, so a delivered message proves that swaks used it.
    let app = spawn_app_with_smtp(Some(&tls), |s| s.loopback_is_local = false).await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let login = app.smtp_credential(&acme).await;
    let port = app.smtp_addr().port().to_string();
    let output = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port, "--tls"])
        .args(["--auth", "PLAIN", "--auth-user", &login.username])
        .args(["--auth-password", &login.password])
        .args(["--from", "app@acme.example", "--to", "ops@acme.example"])
        .args(["--helo", "client.test", "--header", "Subject: From swaks"])
        .args(["--body", "Sent by swaks."])
        .output()
        .await
        .expect("swaks runs");
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "swaks: {transcript}");
    let id = transcript
        .lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .unwrap_or_else(|| panic!("no 250 with an id: {transcript}"))
        .trim()
        .to_owned();

    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].header("Subject").as_deref(), Some("From swaks"));
    let view = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(view["smtp"]["credential_id"], login.id.as_str(), "{view}");
}
