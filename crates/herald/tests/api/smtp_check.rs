//! `herald smtp-check` run as the real binary against the test SMTP server:
//! what it prints from a hostile server, its errors, and its egress rules.

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use serde_json::json;

use crate::helpers::*;

/// What one run of the command left: exit status, standard output and error.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `herald smtp-check` with `args` and no egress settings from the
/// environment. The test SMTP server runs on this test's runtime, so the
/// child is awaited, not waited for.
async fn smtp_check(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("smtp-check")
        .args(args)
        .env_remove("HERALD_EGRESS_ALLOW")
        .env_remove("HERALD_EGRESS_DENY")
        .env("HERALD_LOG", "warn")
        .envs(envs.iter().copied())
        .output()
        .await
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Lets the check reach the test SMTP server on loopback, as a node's
/// operator would allow an internal relay.
const LOOPBACK: &[(&str, &str)] = &[("HERALD_EGRESS_ALLOW", "127.0.0.0/8")];

/// Runs the check against `smtp` on 127.0.0.1 without TLS, loopback
/// allowed, with the flags in `more` added.
async fn check_over_loopback(smtp: &TestSmtpServer, more: &[&str]) -> Run {
    let port = smtp.port().to_string();
    let mut args = vec!["--host", "127.0.0.1", "--port", &port, "--security", "none"];
    args.extend_from_slice(more);
    smtp_check(&args, LOOPBACK).await
}

/// Characters a terminal acts on, which must never reach it from a server.
fn has_terminal_controls(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

/// Issue 11 finding 9: a server's replies were printed raw, so escape
/// sequences could clear or rewrite the operator's terminal.
#[tokio::test]
async fn what_the_server_says_is_printed_escaped() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(Rule::new(
        Command::Connect,
        Action::Reply(
            220,
            "mx.acme.example \u{1b}[2J\u{1b}]0;owned\u{7} ready \u{202e}txt.exe\u{9b}".into(),
        ),
    ));
    smtp.script(Rule::new(
        Command::Rcpt,
        Action::Reply(
            550,
            "5.1.1 \u{1b}[8mhidden\u{1b}[0m \u{2066}no such user".into(),
        ),
    ));
    let run = check_over_loopback(
        &smtp,
        &["--from", "alerts@acme.example", "--to", "gone@acme.example"],
    )
    .await;
    assert!(!run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        !has_terminal_controls(&run.stdout) && !has_terminal_controls(&run.stderr),
        "{:?}{:?}",
        run.stdout,
        run.stderr
    );
    for shown in [
        "\\x1b[2J\\x1b]0;owned\\x07 ready \\u{202e}txt.exe\\x9b",
        "5.1.1 \\x1b[8mhidden\\x1b[0m \\u{2066}no such user",
    ] {
        assert!(run.stdout.contains(shown), "{shown} not in {}", run.stdout);
    }
}

/// The failing step's line said it, and then the error at exit said it all again.
#[tokio::test]
async fn each_error_is_printed_once() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(reply(
        Command::Ehlo,
        554,
        "5.7.1 client rejected by mx-7f3a",
    ));
    let run = check_over_loopback(&smtp, &[]).await;
    assert!(!run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("rejected by mx-7f3a")),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("mx-7f3a"),
        "the reply again at exit: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the check failed at the ehlo step"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn to_without_from_is_an_error_naming_both() {
    let smtp = TestSmtpServer::start().await;
    for (flag, value) in [
        ("--to", "ops@acme.example"),
        ("--from", "alerts@acme.example"),
    ] {
        let run = check_over_loopback(&smtp, &[flag, value]).await;
        assert!(!run.ok, "{flag} alone was accepted: {}", run.stdout);
        assert!(
            run.stderr.contains("--from") && run.stderr.contains("--to"),
            "{flag} alone: {}",
            run.stderr
        );
    }
    assert_eq!(smtp.connections(), 0, "nothing was checked");
}

/// The flags mode ignored the egress rules; the stored mode applied them
/// without saying which setting allows a range. Both apply the node's rules
/// and name HERALD_EGRESS_ALLOW when they refuse.
#[tokio::test]
async fn both_modes_apply_the_nodes_egress_rules_and_say_how_to_allow() {
    let help = smtp_check(&["--help"], &[]).await;
    assert!(
        help.stdout.contains("HERALD_EGRESS_ALLOW"),
        "{}",
        help.stdout
    );

    let smtp = TestSmtpServer::start().await;
    let port = smtp.port().to_string();
    let flags = ["--host", "127.0.0.1", "--port", &port, "--security", "none"];
    let refused = smtp_check(&flags, &[]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("--egress-allow") && refused.stderr.contains("HERALD_EGRESS_ALLOW"),
        "{}",
        refused.stderr
    );
    assert_eq!(smtp.connections(), 0, "refused before connecting");
    let allowed = smtp_check(&flags, LOOPBACK).await;
    assert!(allowed.ok, "{}{}", allowed.stdout, allowed.stderr);

    // The stored mode: the same rules, the same words.
    let (app, acme) = app_with_acme().await;
    let server = app
        .configure(
            &acme,
            json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"}),
            None,
        )
        .await;
    let data_dir = app.dir.path().to_str().unwrap().to_owned();
    let stored = [
        "--tenant",
        "acme",
        "--server",
        server["id"].as_str().unwrap(),
        "--data-dir",
        &data_dir,
    ];
    let refused = smtp_check(&stored, &[]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("HERALD_EGRESS_ALLOW"),
        "{}",
        refused.stderr
    );
    let mut with_flag = stored.to_vec();
    with_flag.extend(["--egress-allow", "127.0.0.0/8"]);
    let allowed = smtp_check(&with_flag, &[]).await;
    assert!(allowed.ok, "{}{}", allowed.stdout, allowed.stderr);
}
