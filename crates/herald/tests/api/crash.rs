//! Crash safety: a message acknowledged with 202 is delivered after the node
//! process is killed with SIGKILL and started again.

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = TestSmtpServer::start().await;
    // The first connection stalls at the greeting, so the message is in flight when the node dies.
    smtp.script(Rule::new(Command::Connect, Action::Stall).times(1));

    let lease = ["--lease", "1s", "--smtp-timeout", "30s"];
    let mut node = start_process(dir.path(), &lease, &[]).await;
    let app = node.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let id = app.submit_to(&acme, "a@acme.example", "Survivor").await;
    eventually("the worker to connect", || async {
        (smtp.connections() >= 1).then_some(())
    })
    .await;

    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.unwrap();
    assert!(smtp.messages().is_empty());

    let restarted = start_process(dir.path(), &lease, &[]).await;
    let app = restarted.app();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_committed_submissions_survive_a_sigkill_right_after_their_202() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = TestSmtpServer::start().await;
    // Nothing is delivered while the node lives, so only the store can keep the messages.
    smtp.script(Rule::new(Command::Connect, Action::Stall));
    let args = ["--lease", "1s", "--smtp-timeout", "30s"];
    let mut node = start_process(dir.path(), &args, &[]).await;
    let app = node.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;

    // Many concurrent submissions share commits; the node dies the moment the last is answered.
    let submissions = (0..200).map(|i| {
        let (app, acme) = (&app, &acme);
        async move { app.submit(acme, json!({"to": [format!("u{i}@acme.example")], "subject": format!("g{i}"), "text": "x"})).await }
    });
    let acknowledged = futures_util::future::join_all(submissions).await;
    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.unwrap();

    smtp.clear_script();
    let restarted = start_process(dir.path(), &args, &[]).await;
    let app = restarted.app();
    let received = smtp.wait_for_messages(acknowledged.len(), DEADLINE).await;
    let mut subjects: Vec<String> = received
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(
        subjects.len(),
        200,
        "every acknowledged message was delivered"
    );
    for id in acknowledged.iter().take(20) {
        app.wait_for_status(&acme, id, "sent").await;
    }
}
