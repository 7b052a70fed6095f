//! Interoperability with an SMTP server nobody here wrote: Postfix's `smtp-sink`.
//!
//! CI installs it (`.ci/run`); elsewhere the test says in one line that it
//! skipped, and when `HERALD_REQUIRE` names `postfix` (or `CI` is set) a missing
//! `smtp-sink` fails the run.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use herald_testkit::Dependency;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::helpers::*;

fn smtp_sink() -> Option<PathBuf> {
    ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Starts smtp-sink on a port the kernel just handed out, appending every message to `dump`.
///
/// Between the probe's release of the port and smtp-sink's bind, another
/// test's listener may take it: only a greeting with this sink's own name
/// (`-h`) shows that smtp-sink is the one answering there.
async fn start_sink(binary: &Path, dump: &Path) -> (Child, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let name = format!("sink-{}-{port}.test", std::process::id());
        let mut child = Command::new(binary)
            .args(["-u", "nobody", "-h", &name, "-D"])
            .arg(dump)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("smtp-sink starts");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // The port was taken in the meantime: try another.
            }
            if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut greeting = String::new();
                let mut reader = tokio::io::BufReader::new(stream);
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut greeting),
                )
                .await;
                if matches!(read, Ok(Ok(_))) && greeting.contains(&name) {
                    return (child, port);
                }
                // Someone else's listener: this smtp-sink could not bind.
                child.kill().await.ok();
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "smtp-sink did not listen in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    panic!("smtp-sink could not listen on a free port");
}

#[tokio::test]
async fn delivers_to_postfix_smtp_sink_through_a_pool() {
    let found = smtp_sink().ok_or("smtp-sink (Debian package postfix) is not installed");
    let Some(binary) = herald_testkit::require(Dependency::Postfix, found) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // smtp-sink drops to `nobody` before it writes the dump.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dump = dir.path().join("dump");
    let (_sink, port) = start_sink(&binary, &dump).await;

    let app = spawn_app().await;
    let entry = json!({"name": "sink", "host": "127.0.0.1", "port": port, "security": "none", "max_connections": 3});
    let acme = app.configured_tenant("acme", entry, None).await;

    let mut ids = Vec::new();
    for i in 0..30 {
        let message = json!({"to": [format!("user{i}@sink.example")], "cc": ["audit@sink.example"],
                             "subject": format!("Interop {i}"), "text": "line\n.\nafter a dot"});
        ids.push(app.submit(&acme, message).await);
    }
    for id in &ids {
        let message = app.wait_for_status(&acme, id, "sent").await;
        for recipient in message["recipients"].as_array().unwrap() {
            let attempt = &recipient["attempts"][0];
            assert_eq!(attempt["code"], 250, "{attempt}");
            assert_eq!(attempt["enhanced_code"], "2.0.0");
        }
    }
    // Herald claims recipients, not messages: when a claim ends between a
    // message's two recipients, they go in two transactions, and the message
    // is in the dump twice, once with each. So the dump is read for who got
    // which message, not for how many it holds.
    let expected: BTreeMap<String, Vec<String>> = (0..30)
        .map(|i| {
            let mut to = vec![
                format!("<user{i}@sink.example>"),
                "<audit@sink.example>".to_owned(),
            ];
            to.sort();
            (format!("Interop {i}"), to)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&dump).unwrap_or_default();
        let received = received(&text);
        if received == expected {
            let transactions = text.matches("X-Client-Addr: ").count();
            eprintln!("smtp-sink took the 30 messages in {transactions} transactions");
            break;
        }
        // A recipient given a message twice is there for good.
        let twice: Vec<_> = received
            .iter()
            .filter(|(_, to)| to.windows(2).any(|pair| pair[0] == pair[1]))
            .collect();
        assert!(twice.is_empty(), "delivered twice: {twice:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "smtp-sink received, by subject: {received:?}; the dump ends:\n{}",
            &text[text.len().saturating_sub(3000)..]
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The recipients (`X-Rcpt-Args`, sorted) of every subject in an smtp-sink
/// dump, whose transactions each begin with `X-Client-Addr`.
fn received(dump: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut transactions = Vec::new();
    for line in dump.lines() {
        if line.starts_with("X-Client-Addr: ") || transactions.is_empty() {
            transactions.push((None, Vec::new()));
        }
        let (subject, to) = transactions.last_mut().unwrap();
        if let Some(rcpt) = line.strip_prefix("X-Rcpt-Args: ") {
            // The address, without any ESMTP parameters after it.
            to.extend(rcpt.split_whitespace().next().map(str::to_owned));
        } else if let Some(text) = line.strip_prefix("Subject: ") {
            subject.get_or_insert_with(|| text.to_owned());
        }
    }
    for (subject, to) in transactions {
        let entry = by_subject.entry(subject.unwrap_or_default()).or_default();
        entry.extend(to);
        entry.sort();
    }
    by_subject
}
