//! Crash recovery at start: a node killed mid-delivery and started again
//! delivers what it had in flight at once, not when its leases end; and only
//! one node runs on an embedded (SQLite) data directory.

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_delivers_its_interrupted_mail_without_waiting_for_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = TestSmtpServer::start().await;
    // Every DATA goes unanswered, so the messages stay `sending` until the node dies.
    smtp.script(Rule::new(Command::Data, Action::Stall));
    // A lease far longer than the test: only recovery at start can move the mail.
    let args = ["--lease", "10m", "--smtp-timeout", "5m"];
    let mut node = start_process(dir.path(), &args, &[]).await;
    let app = node.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let ids = submit_until_each_reaches_data(&app, &acme, &smtp, 3).await;
    // When the killed process's leases would end.
    let mut lease_ends = Vec::new();
    for id in &ids {
        let message = app.message(&acme, id).await;
        let recipient = &message["recipients"][0];
        assert_eq!(recipient["status"], "sending", "{message}");
        lease_ends.push(ms(&recipient["next_attempt_at"]));
    }

    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.unwrap();
    assert!(smtp.messages().is_empty());
    smtp.clear_script();

    let restarted = start_process(dir.path(), &args, &[]).await;
    let app = restarted.app();
    smtp.wait_for_messages(ids.len(), DEADLINE).await;
    for (id, lease_end) in ids.iter().zip(lease_ends) {
        let message = app.wait_for_status(&acme, id, "sent").await;
        let attempts = attempts_of(&message);
        assert_eq!(
            attempts.len(),
            1,
            "giving a lease back records no attempt: {message}"
        );
        assert_eq!(attempts[0]["code"], 250, "{message}");
        assert!(
            ms(&attempts[0]["at"]) < lease_end,
            "delivered while the old lease still held: {message}"
        );
    }
    assert_eq!(smtp.messages().len(), ids.len(), "each delivered once");
    let output = restarted.output.lock().unwrap().clone();
    assert!(
        output.contains("this node stopped without finishing its deliveries")
            && output.contains("recipients=3"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_one_data_directory_is_refused_but_commands_beside_it_run() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_process(dir.path(), &[], &[]).await;

    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("HERALD_BOOTSTRAP_TOKEN", OPERATOR)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("the second node gives up at once")
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "another herald is running on the data directory {}",
            dir.path().display()
        )),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("herald listening"),
        "the second node never listened"
    );

    // The first node runs on, and a command that writes to its database still works.
    let health = reqwest::get(format!("{}/healthz", first.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let set_password = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["operator", "set-password", "--email", "ops@example.com"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("HERALD_OPERATOR_PASSWORD", "correct horse battery staple")
        .output()
        .await
        .unwrap();
    assert!(
        set_password.status.success(),
        "{}",
        String::from_utf8_lossy(&set_password.stderr)
    );
}
