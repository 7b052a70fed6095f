//! The `postfix-smtpd` phase: the same SMTP load as `smtp-ingest`, into a
//! private Postfix instance whose smtpd takes mail from loopback into its
//! queue (the cleanup daemon fsyncs each queue file before smtpd answers
//! `250`) and whose queue manager relays it to the benchmark's sink, as
//! Herald's worker does in the other phase.
//!
//! The instance lives in a temporary directory with its own main.cf and
//! master.cf (no chroot), queue, ports and log; the system's Postfix, its
//! /etc/postfix and its queue are never touched. Postfix's master must start
//! as root; without root or without Postfix the phase says why and is left
//! out of the report.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_testkit::postfix::{self, POSTFIX, master_cf, reap, user_ids};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::sink::Sink;
use crate::smtp_load::{self, SmtpLoad};
use crate::sys::{CpuMark, round};

/// A running instance, stopped when dropped.
struct Instance {
    port: u16,
    master: Option<Child>,
    /// Declared last: removed after the master was stopped.
    dir: TempDir,
}

/// Why the phase cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !Path::new(POSTFIX).exists() {
        return Some(format!("{POSTFIX} is missing (Debian package postfix)"));
    }
    if user_ids("postfix").is_none() {
        return Some("there is no postfix user (Debian package postfix)".into());
    }
    let owner = tempfile::tempdir()
        .ok()
        .and_then(|d| d.path().metadata().ok());
    if owner.is_none_or(|m| m.uid() != 0) {
        return Some("Postfix's master must be started as root".into());
    }
    None
}

/// Postfix's defaults but for where things live and where mail goes: every
/// client on loopback may relay, everything is relayed to the sink without
/// TLS. Durability and process limits are Postfix's own (100 smtpd processes,
/// 20 deliveries at once to one destination, `in_flow_delay` 1 s).
fn main_cf(dir: &Path, banner: &str, sink_port: u16) -> String {
    postfix::main_cf(dir, "postfix.bench", banner)
        + &format!(
            "\
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
"
        )
}

/// A port the kernel considers free now; Postfix binds it itself a moment
/// later, so another process could take it first (`start` then tries again).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// True once `port` greets with a line holding `token`; false when the master
/// exits first (it could not bind) or another server answers.
async fn greets(port: u16, token: &str, master: &mut Child) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if master.try_wait()?.is_some() {
            return Ok(false);
        }
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut stream = BufReader::new(stream);
            let mut greeting = String::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut greeting)).await;
            return Ok(greeting.starts_with("220 ") && greeting.contains(token));
        }
        anyhow::ensure!(Instant::now() < deadline, "Postfix did not listen in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Instance {
    /// Configures and starts an instance relaying to `sink_port`.
    async fn start(sink_port: u16) -> anyhow::Result<Instance> {
        let dir = tempfile::Builder::new()
            .prefix("herald-bench-postfix-")
            .tempdir()?;
        let path = dir.path().to_owned();
        let (uid, gid) = user_ids("postfix").context("the postfix user")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        for sub in ["etc", "queue", "data"] {
            fs::create_dir(path.join(sub))?;
        }
        std::os::unix::fs::chown(path.join("data"), Some(uid), Some(gid))?;
        let mut instance = Instance {
            port: 0,
            master: None,
            dir,
        };
        // The directory's name in the greeting tells our smtpd from anyone else's.
        let token = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for _ in 0..5 {
            let port = free_port()?;
            fs::write(path.join("etc/main.cf"), main_cf(&path, &token, sink_port))?;
            fs::write(path.join("etc/master.cf"), master_cf(port))?;
            let output = fs::File::create(path.join("postfix.out"))?;
            // `start-fg` stays for the master's lifetime, so a failed bind shows as its exit.
            let mut master = Command::new(POSTFIX)
                .arg("-c")
                .arg(path.join("etc"))
                .arg("start-fg")
                .stdout(output.try_clone()?)
                .stderr(output)
                .spawn()
                .context("starting postfix")?;
            let listening = greets(port, &token, &mut master).await;
            instance.master = Some(master);
            if listening? {
                instance.port = port;
                return Ok(instance);
            }
            instance.stop();
        }
        anyhow::bail!(
            "Postfix could not listen on a free port: {}",
            fs::read_to_string(path.join("postfix.out")).unwrap_or_default()
        )
    }

    /// Postfix's log so far.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Stops the master (`postfix stop` signals it and waits) and reaps `start-fg`.
    fn stop(&mut self) {
        let Some(child) = self.master.take() else {
            return;
        };
        let _ = Command::new(POSTFIX)
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        reap(child);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the phase; `Ok(Err(why))` when Postfix cannot run here.
pub async fn run(
    sink: &Sink,
    load: SmtpLoad,
    deadline: Duration,
) -> anyhow::Result<Result<Value, String>> {
    if let Some(why) = unavailable() {
        return Ok(Err(why));
    }
    let mut instance = Instance::start(sink.port()).await?;
    let before = sink.messages();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], instance.port));
    let cpu = CpuMark::now();
    let out = smtp_load::run(addr, load).await;
    let cpu = cpu.since();
    let delivered_meanwhile = sink.messages() - before;
    let drain_started = Instant::now();
    let delivered = sink.wait_for(before + out.accepted, deadline).await - before;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let log = instance.log();
    // Postfix's own count of what its smtpd queued, beside the generator's.
    let queued = log
        .lines()
        .filter(|l| l.contains("postfix/cleanup[") && l.contains("message-id="))
        .count();
    let version = Command::new("/usr/sbin/postconf")
        .args(["-d", "-h", "mail_version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    instance.stop();

    let mut json = smtp_load::json(&out);
    json["what"] = json!(
        "the same SMTP sessions into a private Postfix's smtpd (mynetworks, no TLS): each 250 after cleanup fsynced the queue file; qmgr relaying to the sink meanwhile"
    );
    json["postfix_version"] = json!(version);
    json["load"] = load.json();
    json["queued_per_postfix_log"] = json!(queued);
    json["delivered_during_load"] = json!(delivered_meanwhile);
    json["delivered_in_the_end"] = json!(delivered);
    json["drain_seconds_after_load"] = json!(round(drain_seconds, 3));
    // Postfix end to end: from the first connection until the sink has
    // every message it accepted.
    json["delivered_per_second"] = json!(round(
        delivered as f64 / (out.seconds + drain_seconds).max(1e-9),
        0
    ));
    json["cpu"] = cpu;
    Ok(Ok(json))
}
