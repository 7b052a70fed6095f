//! Crash safety: a message acknowledged with 202 is delivered after the node
//! process is killed with SIGKILL and started again.

use std::path::Path;
use std::process::Stdio;

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as Process};

use crate::helpers::*;

/// Starts the real `herald` binary on port 0 and returns it with its base URL.
async fn start_process(dir: &Path) -> (Child, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--node-name",
            "crash-node",
        ])
        .args([
            "--lease",
            "1s",
            "--retry-base",
            "200ms",
            "--poll-interval",
            "200ms",
            "--smtp-timeout",
            "30s",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("HERALD_BOOTSTRAP_TOKEN", OPERATOR)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the herald binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("reading the node's output") {
            if let Some(url) = line.strip_prefix("herald listening on ") {
                return url.to_owned();
            }
        }
        panic!("the node exited before listening");
    })
    .await
    .expect("the node listens within the deadline");
    (child, base)
}

#[tokio::test]
async fn an_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = TestSmtpServer::start().await;
    // The first connection stalls at the greeting, so the message is in flight when the node dies.
    smtp.script(Rule::new(Command::Connect, Action::Stall).times(1));

    let (mut child, base) = start_process(dir.path()).await;
    let app = TestApp {
        base,
        client: reqwest::Client::new(),
        node: None,
        dir: tempfile::tempdir().unwrap(),
    };
    let acme = app.tenant("acme").await;
    app.use_smtp_server(&acme, smtp.port()).await;
    let id = app
        .submit(
            &acme,
            json!({"to": ["a@acme.example"], "subject": "Survivor", "text": "x"}),
        )
        .await;
    eventually("the worker to connect", || async {
        (smtp.connections() >= 1).then_some(())
    })
    .await;

    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    assert!(smtp.messages().is_empty());

    let (_child, base) = start_process(dir.path()).await;
    let app = TestApp { base, ..app };
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, vec!["a@acme.example".to_owned()]);
    assert_eq!(received[0].header("Subject").as_deref(), Some("Survivor"));
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(
        message["recipients"][0]["attempts"][0]["code"], 250,
        "{message}"
    );
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
}
