//! What a failed delivery leaves behind: a test message's single attempt, the
//! session's address and TLS on a failed attempt, and the node's log lines.

use herald_testsmtp::{Command, TestSmtpServer};
use serde_json::json;

use crate::helpers::*;

/// A STARTTLS server that wants `herald@acme.example` / `right-pw`, and a
/// tenant whose active provider logs in to it with `password`.
async fn starttls_with_auth(app: &TestApp, password: &str) -> (TestSmtpServer, TestTenant) {
    let (tls, smtp) = starttls_server_with_auth("herald@acme.example", "right-pw").await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "starttls",
                       "tls_ca_pem": tls.ca_pem(), "requires_auth": true});
    let acme = app
        .configured_tenant("acme", entry, Some(account_with(password)))
        .await;
    (smtp, acme)
}

fn logins(smtp: &TestSmtpServer) -> usize {
    smtp.commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("AUTH "))
        .count()
}

/// Defect 7 of issue 12: a test message through a wrong-password provider
/// was retried like normal mail, logging in again and again. It makes one
/// attempt, and its outcome is final, whether the server's answer is
/// permanent (535) or temporary (451).
#[tokio::test]
async fn a_test_message_makes_one_attempt_and_its_failure_is_final() {
    for (password, script) in [
        ("wrong-pw", None),
        (
            "right-pw",
            Some(reply(
                Command::Auth,
                454,
                "4.7.0 temporary authentication failure",
            )),
        ),
    ] {
        let app = spawn_app().await;
        let (smtp, acme) = starttls_with_auth(&app, password).await;
        if let Some(rule) = script {
            smtp.script(rule);
        }
        let id = app.send_test_message(&acme, json!({})).await;
        let message = app.wait_for_status(&acme, &id, "failed").await;
        let attempts = attempts_of(&message);
        assert_eq!(attempts.len(), 1, "{message}");
        let attempt = &attempts[0];
        assert_eq!(attempt["outcome"], "failed", "{attempt}");
        assert_eq!(attempt["step"], "auth", "{attempt}");
        assert!(
            attempt["response"]
                .as_str()
                .unwrap()
                .contains("a test message makes one attempt"),
            "{attempt}"
        );
        assert!(attempt["diagnosis"].is_array(), "{attempt}");
        assert_eq!(logins(&smtp), 1, "{:?}", smtp.commands());
    }
}

/// A temporary refusal of the recipient is final for a test message too.
#[tokio::test]
async fn a_test_message_refused_for_now_at_rcpt_is_not_retried() {
    let app = spawn_app().await;
    let (smtp, acme) = starttls_with_auth(&app, "right-pw").await;
    smtp.script(reply(Command::Rcpt, 451, "4.3.0 try again later"));
    let id = app.send_test_message(&acme, json!({})).await;
    let message = app.wait_for_status(&acme, &id, "failed").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 1, "{message}");
    assert_eq!(attempts[0]["code"], 451, "{message}");
    let mails = smtp
        .commands()
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .count();
    assert_eq!(mails, 1, "{:?}", smtp.commands());
}

/// Defect 4 of issue 12: a login refused after STARTTLS left the attempt
/// without the address and TLS the session had. Needs the SMTP client to
/// fill in `SmtpError::remote` and `SmtpError::tls`.
#[tokio::test]
async fn a_refused_login_over_starttls_records_the_address_and_the_tls() {
    let app = spawn_app().await;
    let (smtp, acme) = starttls_with_auth(&app, "wrong-pw").await;
    let id = app.submit_to(&acme, "a@acme.example", "x").await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["step"], "auth", "{attempt}");
    assert_eq!(
        attempt["remote_addr"],
        format!("127.0.0.1:{}", smtp.port()),
        "{attempt}"
    );
    assert_encrypted(attempt, "TLS");
}

/// The lines of a node's output that mention `needle`.
fn lines_with(output: &str, needle: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// At its default log level a node said nothing about deliveries. Every
/// failed or deferred attempt is logged at info, with the tenant, message,
/// recipient, step, code and reply (escaped), never a secret; a success only
/// at debug.
#[tokio::test]
async fn failed_and_deferred_attempts_are_logged_at_the_default_level() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_process(dir.path(), &[], &[]).await;
    let app = node.app();
    let (smtp, acme) = starttls_with_auth(&app, "right-pw").await;
    let (_, tenant) = app.get("/v1/tenants/acme", OPERATOR).await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    smtp.script(reply(Command::Rcpt, 550, "5.1.1 \u{1b}[2Jno such user").matching("gone@"));
    smtp.script(reply(Command::Rcpt, 452, "4.2.2 mailbox full").matching("full@"));
    let failed = app.submit_to(&acme, "gone@acme.example", "x").await;
    let deferred = app.submit_to(&acme, "full@acme.example", "x").await;
    let sent = app.submit_to(&acme, "fine@acme.example", "x").await;
    app.wait_for_status(&acme, &failed, "failed").await;
    app.wait_for_attempts(&acme, &deferred, 1).await;
    app.wait_for_status(&acme, &sent, "sent").await;
    let output = |id: &str| {
        let id = id.to_owned();
        let output = node.output.clone();
        async move {
            eventually(&format!("a log line about {id}"), || {
                let found = lines_with(&output.lock().unwrap(), &id);
                async move { (!found.is_empty()).then_some(found) }
            })
            .await
        }
    };

    let lines = output(&failed).await;
    let line = &lines[0];
    for part in [
        "INFO",
        "delivery attempt failed",
        &format!("tenant={tenant_id}"),
        &format!("message_id={failed}"),
        "recipient=gone@acme.example",
        "step=rcpt",
        "code=550",
        "5.1.1 \\x1b[2Jno such user",
    ] {
        assert!(line.contains(part), "{part:?} is not in {line}");
    }
    assert!(!line.contains('\u{1b}'), "{line:?}");

    let lines = output(&deferred).await;
    assert!(
        lines[0].contains("delivery attempt deferred")
            && lines[0].contains("code=452")
            && lines[0].contains("recipient=full@acme.example"),
        "{lines:?}"
    );
    // A success is a debug line, not shown at the default level.
    let everything = node.output.lock().unwrap().clone();
    assert!(lines_with(&everything, &sent).is_empty(), "{everything}");
    assert!(!everything.contains("right-pw"), "{everything}");
}
