//! The first start and the command line as a new administrator meets them: the
//! operator token is made only once the node listens, what a start prints, the
//! errors of expected failures (no backtrace), and each command's own flags.

use std::process::{Output, Stdio};

use herald::config::Database;
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// The real binary with none of the settings a developer's shell may carry,
/// so that each test decides them.
fn herald() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for variable in [
        "HERALD_BOOTSTRAP_TOKEN",
        "HERALD_OPERATOR_PASSWORD",
        "HERALD_DATABASE_URL",
        "HERALD_DATA_DIR",
        "HERALD_HTTP_ADDR",
        "HERALD_CONFIG",
        "HERALD_MASTER_KEY",
    ] {
        command.env_remove(variable);
    }
    command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command to its end, within the deadline.
async fn finish(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the command ends within the deadline")
        .expect("the herald binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The standard error of a run that must have failed.
fn stderr_of_failure(failed: &Output) -> String {
    let stderr = text(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    stderr
}

/// Whether the embedded database in `dir` holds an operator token.
async fn operator_token_exists(dir: &std::path::Path) -> bool {
    let store = Database::Sqlite(dir.join("herald.db"))
        .open()
        .await
        .expect("the database opens");
    store.operator_token_exists().await.unwrap()
}

#[tokio::test]
async fn a_first_start_that_cannot_listen_makes_no_token_and_the_next_start_prints_one() {
    let dir = tempfile::tempdir().unwrap();
    // A port this test holds, so the node cannot have it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let failed = finish(
        herald()
            .args(["serve", "--http", &busy, "--data-dir"])
            .arg(dir.path())
            .env("RUST_BACKTRACE", "1"),
    )
    .await;
    let (stdout, stderr) = (text(&failed.stdout), text(&failed.stderr));
    assert!(!failed.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {busy}")) && stderr.contains("--http"),
        "the bind error names the address and --http: {stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "no backtrace for a busy port: {stderr}"
    );
    assert!(!stdout.contains("Operator token"), "{stdout}");
    assert!(
        !operator_token_exists(dir.path()).await,
        "a start that could not listen left an operator token behind"
    );

    // The next start, on a free port, makes the token and prints it.
    let mut node = herald()
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut console) = (None, None, None);
    let mut after_heading = false;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("herald listening on ") {
                base = Some(url.to_owned());
            } else if line.starts_with("Operator token") {
                after_heading = true;
            } else if after_heading && !line.trim().is_empty() && token.is_none() {
                token = Some(line.trim().to_owned());
            } else if line.starts_with("Web console: ") {
                console = Some(line);
            }
            if base.is_some() && token.is_some() && console.is_some() {
                return;
            }
        }
        panic!("the node's standard output ended early");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the node prints its address, token and console within the deadline");
    let (base, token, console) = (base.unwrap(), token.unwrap(), console.unwrap());
    assert!(
        console.contains(&format!("{base}/"))
            && console.contains("herald operator set-password --email"),
        "{console}"
    );
    let listed = reqwest::Client::new()
        .get(format!("{base}/v1/operator/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "the printed token works");
    node.kill().await.unwrap();
}

#[tokio::test]
async fn a_refused_database_connection_prints_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let failed = finish(
        herald()
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--database-url", "postgres://herald@127.0.0.1:1/herald"])
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1"),
    )
    .await;
    let stderr = stderr_of_failure(&failed);
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "no backtrace for a refused connection: {stderr}"
    );
}

/// Runs `command` in a session of its own, which has no controlling
/// terminal, as under a service manager or in a container.
async fn without_a_terminal(command: &mut tokio::process::Command) -> Output {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    finish(command).await
}

#[tokio::test]
async fn a_password_prompt_without_a_terminal_says_which_variable_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let failed = without_a_terminal(
        herald()
            .args(["operator", "set-password", "--email", "ops@example.com"])
            .arg("--data-dir")
            .arg(dir.path()),
    )
    .await;
    let stderr = stderr_of_failure(&failed);
    assert!(
        stderr.contains("cannot read the password from a terminal")
            && stderr.contains("HERALD_OPERATOR_PASSWORD"),
        "{stderr}"
    );

    let failed = without_a_terminal(
        herald()
            .args(["smtp-check", "--host", "127.0.0.1", "--port", "1"])
            .args(["--user", "alerts@acme.example"])
            .env_remove("HERALD_SMTP_PASSWORD"),
    )
    .await;
    let stderr = stderr_of_failure(&failed);
    assert!(stderr.contains("HERALD_SMTP_PASSWORD"), "{stderr}");
}

/// The long help of a subcommand, from the binary.
async fn help(args: &[&str]) -> String {
    let output = finish(herald().args(args).arg("--help")).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[tokio::test]
async fn commands_on_the_data_show_only_the_flags_they_use() {
    for command in [
        &["keys", "rotate"][..],
        &["operator", "set-password"],
        &["operator", "token", "create"],
        &["operator", "token", "list"],
        &["operator", "token", "revoke"],
    ] {
        let help = help(command).await;
        for used in ["--data-dir", "--database-url", "--config"] {
            assert!(help.contains(used), "{command:?} lacks {used}: {help}");
        }
        for node_only in [
            "--http",
            "--egress-allow",
            "--concurrency",
            "--default-smtp",
            "--heartbeat",
        ] {
            assert!(
                !help.contains(node_only),
                "{command:?} shows {node_only}: {help}"
            );
        }
        assert!(help.contains("PostgreSQL"), "{command:?}: {help}");
    }
    let serve = help(&["serve"]).await;
    let database_url = serve
        .split("--database-url")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap();
    assert!(
        database_url.contains("PostgreSQL") && database_url.contains("postgres://"),
        "{database_url}"
    );
}
