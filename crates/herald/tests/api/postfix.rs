//! Herald against a real Postfix: an instance each test configures in a temporary
//! directory (STARTTLS with an rcgen certificate, AUTH through a Dovecot of its
//! own, a per-recipient access map, a small `message_size_limit`), relaying what
//! it accepts to Postfix's `smtp-sink`, whose files the tests parse; and Postfix
//! as Herald's client, relaying to Herald's SMTP listener with `relayhost`,
//! verified TLS and SASL client auth (Cyrus SASL's PLAIN plugin).
//!
//! CI installs Postfix and Dovecot (`.ci/run`) and runs as root, which Postfix's
//! master needs. Elsewhere a test without them says so in one line and passes
//! without running; when `HERALD_REQUIRE` names `postfix` (or `CI` is set) it
//! fails instead. The
//! system's own Postfix and Dovecot (`/etc/postfix`, `/etc/dovecot`, their queue
//! and state) are never started, configured or written: every path these
//! instances use is inside the test's temporary directory.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::Dependency;
use herald_testkit::postfix::{self, POSTFIX, master_cf, reap, user_ids};
use herald_testsmtp::{TestSmtpServer, TestTls};
use mail_parser::MessageParser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const DOVECOT: &str = "/usr/sbin/dovecot";

/// The account Dovecot knows, and its password.
const USERNAME: &str = "herald@acme.example";
const PASSWORD: &str = "postfix-s3cret-pw";

/// Postfix's `message_size_limit`, advertised as `SIZE 20000`.
const SIZE_LIMIT: usize = 20_000;

/// The name in the certificate of Herald's SMTP listener, which a relay in
/// front of Herald verifies.
const HERALD_NAME: &str = "herald.test";

/// Recipients the access map refuses: one for good, one for now.
const REJECTED: &str = "rejected@example.net";
const LATER: &str = "later@example.net";

/// A Postfix instance with its Dovecot and its `smtp-sink`, stopped when dropped
/// (also when the test panics).
struct Postfix {
    /// The port smtpd listens on: STARTTLS, then AUTH PLAIN or LOGIN.
    port: u16,
    /// The CA that signed smtpd's certificate.
    tls: TestTls,
    postfix: Option<Child>,
    dovecot: Option<Child>,
    sink: Option<Child>,
    /// Everything above lives in here; declared last, so it is removed after the
    /// processes above were stopped in `drop`.
    dir: TempDir,
}

/// Says why the Postfix tests cannot run: on a developer's machine the test passes
/// without running; when the run requires Postfix it fails.
fn unavailable(why: &str) -> Option<Postfix> {
    herald_testkit::skip(Dependency::Postfix, why);
    None
}

/// Whether Cyrus SASL's PLAIN plugin is installed (Debian puts it under the
/// multiarch directory, other systems under /usr/lib/sasl2).
fn cyrus_plain_plugin() -> bool {
    let plugin = |dir: &Path| dir.join("sasl2/libplain.so.2").exists();
    plugin(Path::new("/usr/lib"))
        || fs::read_dir("/usr/lib")
            .is_ok_and(|entries| entries.flatten().any(|entry| plugin(&entry.path())))
}

/// Two distinct ports the kernel considers free right now. Postfix's master binds
/// its listeners itself and cannot take over a socket we hold, so the ports are
/// released before the servers start; another process could take one in that
/// moment. `Postfix::start` notices (the server exits on the failed bind, or the
/// greeting is not ours) and tries again with new ports.
fn free_ports() -> (u16, u16) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    )
}

/// Waits until `port` greets with a line containing `token` (and then says QUIT,
/// so that Postfix's log holds no lost connection of ours). False when `child`
/// exits first: it could not listen.
async fn greets(port: u16, token: &str, child: &mut Child) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut stream = BufReader::new(stream);
            let mut greeting = String::new();
            let _ = tokio::time::timeout_at(deadline, stream.read_line(&mut greeting)).await;
            if greeting.starts_with("220 ") && greeting.contains(token) {
                let _ = stream.get_mut().write_all(b"QUIT\r\n").await;
                let _ = stream.read_line(&mut String::new()).await;
                return true;
            }
            // Someone else's server took the port; ours will exit on its failed bind.
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing greeted on port {port} as {token} in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dovecot_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "\
base_dir = {d}/dovecot-run
state_dir = {d}/dovecot-state
log_path = {d}/dovecot.log
instance_name = herald-test-dovecot
# Authentication only: no IMAP or POP3 listener.
protocols =
ssl = no
# Postfix offers AUTH only after STARTTLS, so what reaches Dovecot was encrypted.
disable_plaintext_auth = no
auth_mechanisms = plain login
# Dovecot waits 2 s before answering a failed login by default.
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
# After a failed login Dovecot delays the next from that address (2, 4, 8, then
# 15 s), which retries in these tests would run into; anvil keeps that penalty,
# and a socket of mode 0 keeps the auth process from reaching it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {d}/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"
    )
}

/// What every instance's main.cf says: its own directories, names and log,
/// loopback only, and `banner` in its greeting.
fn common_cf(dir: &Path, banner: &str) -> String {
    postfix::main_cf(dir, "postfix.test", banner)
        + "\
mynetworks = 127.0.0.1/32
# A refused command is answered at once, not after a second.
smtpd_error_sleep_time = 0
"
}

/// The main.cf of the server Herald delivers to: STARTTLS, AUTH through
/// Dovecot, relaying what it accepts to smtp-sink.
fn main_cf(dir: &Path, banner: &str, sink_port: u16) -> String {
    let d = dir.display();
    common_cf(dir, banner)
        + &format!(
            "\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_tls_auth_only = yes
smtpd_tls_received_header = yes
smtpd_tls_session_cache_database =
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/auth
smtpd_sasl_authenticated_header = yes
# Only a client that logged in may relay; everything is relayed to smtp-sink.
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = check_recipient_access texthash:{d}/etc/recipients
message_size_limit = {SIZE_LIMIT}
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
"
        )
}

/// The main.cf of a relay in front of Herald, as an application's own Postfix
/// would be set up: smtpd takes mail from loopback without AUTH, and the
/// client relays everything to Herald's listener over verified TLS (the
/// certificate's name, signed by the CA in `herald-ca.pem`), logging in with
/// the SMTP credential in `etc/sasl_passwd` (a `texthash:` map: no postmap).
fn relay_main_cf(dir: &Path, banner: &str, herald_port: u16) -> String {
    let d = dir.display();
    common_cf(dir, banner)
        + &format!(
            "\
# The application on this host may hand over mail without logging in.
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{herald_port}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{d}/etc/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = {HERALD_NAME}
smtp_tls_CAfile = {d}/herald-ca.pem
smtp_tls_session_cache_database =
# `Verified TLS connection established to …` in the log.
smtp_tls_loglevel = 1
"
        )
}

/// Where a relay in front of Herald sends its mail, and how it logs in.
struct HeraldRelay {
    /// Herald's SMTP listener on 127.0.0.1 (STARTTLS).
    port: u16,
    /// The CA that signed the listener's certificate for [`HERALD_NAME`].
    ca_pem: String,
    /// The tenant's SMTP credential.
    username: String,
    password: String,
}

impl Postfix {
    /// Configures and starts Dovecot, `smtp-sink` and Postfix in a new temporary
    /// directory; `None` (after saying why) when they cannot run here.
    async fn start() -> Option<Postfix> {
        Postfix::launch(None).await
    }

    /// Configures and starts a Postfix that relays whatever its smtpd takes
    /// from loopback to Herald: no Dovecot and no smtp-sink. `None` (after
    /// saying why) when it cannot run here.
    async fn relaying_to(herald: &HeraldRelay) -> Option<Postfix> {
        Postfix::launch(Some(herald)).await
    }

    async fn launch(relay: Option<&HeraldRelay>) -> Option<Postfix> {
        let started = Instant::now();
        let needed: &[&str] = match relay {
            None => &[POSTFIX, SMTP_SINK, DOVECOT],
            Some(_) => &[POSTFIX],
        };
        if let Some(missing) = needed.iter().find(|p| !Path::new(p).exists()) {
            return unavailable(&format!(
                "{missing} is missing (Debian packages postfix and dovecot-core)"
            ));
        }
        // Postfix's SMTP client logs in through Cyrus SASL, whose PLAIN and
        // LOGIN mechanisms are plugins of their own package.
        if relay.is_some() && !cyrus_plain_plugin() {
            return unavailable(
                "Cyrus SASL's PLAIN plugin (libplain.so) is missing (Debian package libsasl2-modules)",
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("herald-postfix-")
            .tempdir()
            .unwrap();
        if dir.path().metadata().unwrap().uid() != 0 {
            return unavailable("Postfix's master must be started as root");
        }
        let Some((postfix_uid, postfix_gid)) = user_ids("postfix") else {
            return unavailable("there is no postfix user (Debian package postfix)");
        };
        let path = dir.path().to_owned();
        // Postfix's daemons (as postfix) and smtp-sink (as nobody) reach into it.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue", "data", "sink"] {
            fs::create_dir(path.join(sub)).unwrap();
        }
        std::os::unix::fs::chown(path.join("data"), Some(postfix_uid), Some(postfix_gid)).unwrap();
        fs::set_permissions(path.join("sink"), fs::Permissions::from_mode(0o777)).unwrap();

        let tls = TestTls::generate(&["127.0.0.1"]);
        let mut postfix = Postfix {
            port: 0,
            tls,
            postfix: None,
            dovecot: None,
            sink: None,
            dir,
        };
        match relay {
            None => postfix.set_up_server().await,
            Some(herald) => {
                fs::write(path.join("herald-ca.pem"), &herald.ca_pem).unwrap();
                // Read by the smtp client, which runs as postfix; root's umask
                // leaves the file readable to it, and to nobody else needs it.
                let secrets = path.join("etc/sasl_passwd");
                fs::write(
                    &secrets,
                    format!(
                        "[127.0.0.1]:{} {}:{}\n",
                        herald.port, herald.username, herald.password
                    ),
                )
                .unwrap();
                fs::set_permissions(&secrets, fs::Permissions::from_mode(0o640)).unwrap();
                std::os::unix::fs::chown(&secrets, Some(0), Some(postfix_gid)).unwrap();
            }
        }

        // The names in the greetings tell our servers from anyone else's on the port.
        let token = path.file_name().unwrap().to_string_lossy().into_owned();
        for _ in 0..5 {
            let (port, sink_port) = free_ports();
            let main = match relay {
                Some(herald) => relay_main_cf(&path, &token, herald.port),
                None => {
                    let sink_name = format!("sink-{token}");
                    let mut sink = Command::new(SMTP_SINK)
                        .args(["-u", "nobody", "-h", &sink_name, "-d"])
                        .arg(path.join("sink/%H%M%S."))
                        .arg(format!("127.0.0.1:{sink_port}"))
                        .arg("64")
                        .stdout(Stdio::null())
                        .stderr(postfix.output_file("sink.out"))
                        .spawn()
                        .expect("smtp-sink starts");
                    if !greets(sink_port, &sink_name, &mut sink).await {
                        reap_killed(sink);
                        continue;
                    }
                    postfix.sink = Some(sink);
                    main_cf(&path, &token, sink_port)
                }
            };
            fs::write(path.join("etc/main.cf"), main).unwrap();
            fs::write(path.join("etc/master.cf"), master_cf(port)).unwrap();
            // `start-fg` keeps a process of ours for the master's lifetime, so a
            // failed bind shows as its exit.
            let mut master = Command::new(POSTFIX)
                .arg("-c")
                .arg(path.join("etc"))
                .arg("start-fg")
                .stdout(postfix.output_file("postfix.out"))
                .stderr(postfix.output_file("postfix.out"))
                .spawn()
                .expect("postfix starts");
            let listening = greets(port, &token, &mut master).await;
            postfix.postfix = Some(master);
            if listening {
                postfix.port = port;
                let _ = writeln!(
                    std::io::stderr(),
                    "postfix{} ready in {:?}",
                    if relay.is_some() {
                        " (relaying to Herald)"
                    } else {
                        ", dovecot and smtp-sink"
                    },
                    started.elapsed()
                );
                return Some(postfix);
            }
            postfix.stop_postfix();
            if let Some(sink) = postfix.sink.take() {
                reap_killed(sink);
            }
        }
        panic!(
            "postfix could not listen on a free port: {}{}",
            postfix.read("postfix.out"),
            postfix.log()
        );
    }

    /// The server's own files (certificate, Dovecot's accounts, the access
    /// map) and its Dovecot, started and ready to answer smtpd.
    async fn set_up_server(&mut self) {
        let path = self.dir.path().to_owned();
        fs::write(path.join("cert.pem"), self.tls.cert_pem()).unwrap();
        fs::write(path.join("key.pem"), self.tls.key_pem()).unwrap();
        fs::set_permissions(path.join("key.pem"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(
            path.join("passwd"),
            format!("{USERNAME}:{{PLAIN}}{PASSWORD}\n"),
        )
        .unwrap();
        fs::write(path.join("dovecot.conf"), dovecot_conf(&path)).unwrap();
        fs::write(
            path.join("etc/recipients"),
            format!(
                "{REJECTED} 550 5.1.1 rejected by the test map\n\
                 {LATER} 450 4.2.0 later by the test map\n"
            ),
        )
        .unwrap();
        self.dovecot = Some(
            Command::new(DOVECOT)
                .arg("-F")
                .arg("-c")
                .arg(path.join("dovecot.conf"))
                .stdout(self.output_file("dovecot.out"))
                .stderr(self.output_file("dovecot.out"))
                .spawn()
                .expect("dovecot starts"),
        );

        // smtpd asks Dovecot for its mechanisms in every session, the first one too.
        let deadline = Instant::now() + DEADLINE;
        while !path.join("auth").exists() {
            let dovecot = self.dovecot.as_mut().unwrap();
            assert!(
                dovecot.try_wait().unwrap().is_none(),
                "dovecot exited: {}{}",
                self.read("dovecot.out"),
                self.read("dovecot.log")
            );
            assert!(
                Instant::now() < deadline,
                "dovecot made no auth socket in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A file in the instance's directory that a child writes its output to.
    fn output_file(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap()
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Postfix's log (`maillog_file`).
    fn log(&self) -> String {
        self.read("maillog")
    }

    /// Waits until Postfix's log satisfies `condition`; returns the log.
    async fn wait_for_log(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        eventually(&format!("Postfix's log to show {what}"), || async {
            let log = self.log();
            condition(&log).then_some(log)
        })
        .await
    }

    /// The SMTP server entry for Herald: STARTTLS, trusting the test CA, AUTH required.
    fn server_entry(&self) -> Value {
        json!({"name": "postfix", "host": "127.0.0.1", "port": self.port, "security": "starttls",
               "tls_ca_pem": self.tls.ca_pem(), "requires_auth": true})
    }

    /// Waits until Postfix has relayed a message for `recipient` to smtp-sink, and
    /// returns what smtp-sink wrote: its `X-…-Args` lines, then the message as
    /// Postfix relayed it, without the empty line smtp-sink adds after each dump.
    async fn delivered(&self, recipient: &str) -> String {
        // Postfix logs `status=sent` after smtp-sink's 250, which comes after the dump.
        let relayed = format!("to=<{recipient}>, relay=127.0.0.1[127.0.0.1]");
        self.wait_for_log(&format!("a message relayed to {recipient}"), |log| {
            log.lines()
                .any(|l| l.contains(&relayed) && l.contains("status=sent"))
        })
        .await;
        let rcpt = format!("X-Rcpt-Args: <{recipient}>");
        let dumps: Vec<String> = self
            .sink_files()
            .into_iter()
            .filter(|text| text.contains(&rcpt))
            .collect();
        assert_eq!(dumps.len(), 1, "one message for {recipient}: {dumps:#?}");
        let dump = &dumps[0];
        dump.strip_suffix('\n').unwrap_or(dump).to_owned()
    }

    /// Every message smtp-sink received so far, raw.
    fn sink_files(&self) -> Vec<String> {
        fs::read_dir(self.dir.path().join("sink"))
            .unwrap()
            .filter_map(|entry| fs::read_to_string(entry.ok()?.path()).ok())
            .collect()
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Stops the master (`postfix stop` signals it through its pid file and waits)
    /// and reaps the `start-fg` process.
    fn stop_postfix(&mut self) {
        if let Some(child) = self.postfix.take() {
            let _ = Command::new(POSTFIX)
                .arg("-c")
                .arg(self.config_dir())
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            reap(child);
        }
    }
}

/// Kills a child that does not need an orderly stop, and reaps it.
fn reap_killed(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop_postfix();
        if let Some(child) = self.dovecot.take() {
            let _ = Command::new(DOVECOT)
                .arg("-c")
                .arg(self.dir.path().join("dovecot.conf"))
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            reap(child);
        }
        if let Some(child) = self.sink.take() {
            reap_killed(child);
        }
    }
}

/// Starts Postfix and a node whose tenant `acme` relays through it, logging
/// in with `mechanism` and `password`; `None` when the test is skipped for want
/// of Postfix.
async fn acme_through_postfix(
    mechanism: &str,
    password: &str,
) -> Option<(Postfix, TestApp, TestTenant)> {
    let postfix = Postfix::start().await?;
    let (app, acme) = app_with_acme().await;
    let login = Some(account(mechanism, password));
    app.configure(&acme, postfix.server_entry(), login).await;
    Some((postfix, app, acme))
}

/// The account for the server entry.
fn account(mechanism: &str, password: &str) -> Value {
    json!({"username": USERNAME, "password": password, "mechanism": mechanism})
}

/// Line endings as written, whatever the transport made of them.
fn lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

fn recipient<'a>(message: &'a Value, address: &str) -> &'a Value {
    message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no recipient {address}: {message}"))
}

/// Waits until the recipient's status is one of `statuses` and returns the message.
async fn wait_for_recipient(
    app: &TestApp,
    tenant: &TestTenant,
    id: &str,
    address: &str,
    statuses: &[&str],
) -> Value {
    eventually(&format!("{address} to be {statuses:?}"), || async {
        let message = app.message(tenant, id).await;
        let status = recipient(&message, address)["status"].clone();
        statuses.iter().any(|s| status == *s).then_some(message)
    })
    .await
}

#[tokio::test]
async fn starttls_with_plain_and_login_delivers_the_message_intact() {
    let Some(postfix) = Postfix::start().await else {
        return;
    };
    let app = spawn_app().await;
    for mechanism in ["plain", "login"] {
        let tenant = app.tenant(&format!("acme-{mechanism}")).await;
        app.configure(
            &tenant,
            postfix.server_entry(),
            Some(account(mechanism, PASSWORD)),
        )
        .await;
        let to = format!("{mechanism}@example.net");
        let subject = format!("Disk full on db-1 ({mechanism}) – Überwachung");
        let text = "The disk on db-1 is 95 % full.\n.\nThe line above was a lone dot.\n\
                    Grüße, ümlauts and a long line: "
            .to_owned()
            + &"0123456789".repeat(12)
            + "\n";
        let id = app
            .submit(
                &tenant,
                json!({"to": [to], "subject": subject, "text": text}),
            )
            .await;
        let message = app.wait_for_status(&tenant, &id, "sent").await;
        let attempt = first_attempt_of(&message);
        assert_encrypted(attempt, "TLSv1");
        assert_eq!(
            attempt["remote_addr"],
            format!("127.0.0.1:{}", postfix.port)
        );
        assert!(
            attempt["response"]
                .as_str()
                .unwrap()
                .starts_with("250 2.0.0 Ok: queued as"),
            "{attempt}"
        );

        let raw = postfix.delivered(&to).await;
        let parsed = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("the delivered message parses");
        assert_eq!(parsed.subject(), Some(subject.as_str()), "{raw}");
        assert_eq!(
            lf(&parsed.body_text(0).expect("a text body")),
            text,
            "{raw}"
        );
        // Postfix's own word on the session: encrypted (ESMTPS) and logged in (A).
        assert!(raw.contains("with ESMTPSA id"), "{raw}");
        assert!(raw.contains("(using TLSv1."), "{raw}");
        assert!(
            raw.contains(&format!("(Authenticated sender: {USERNAME})")),
            "{raw}"
        );
        let sasl = format!(
            "sasl_method={}, sasl_username={USERNAME}",
            mechanism.to_uppercase()
        );
        postfix.wait_for_log(&sasl, |log| log.contains(&sasl)).await;
    }
}

#[tokio::test]
async fn a_wrong_password_defers_with_postfixs_535() {
    let Some((postfix, app, acme)) = acme_through_postfix("plain", "wrong-pw-123").await else {
        return;
    };

    let id = app
        .submit_to(&acme, "ops@example.net", "Wrong password")
        .await;
    let message = app.wait_for_attempts(&acme, &id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["outcome"], "deferred", "{attempt}");
    assert_eq!(attempt["step"], "auth", "{attempt}");
    assert_eq!(attempt["code"], 535, "{attempt}");
    assert_eq!(attempt["enhanced_code"], "5.7.8", "{attempt}");
    assert!(
        attempt["response"]
            .as_str()
            .unwrap()
            .contains("Error: authentication failed"),
        "{attempt}"
    );
    assert!(!message.to_string().contains("wrong-pw-123"));
    postfix
        .wait_for_log("the failed login", |log| {
            log.contains("SASL PLAIN authentication failed")
        })
        .await;
    assert!(postfix.sink_files().is_empty());
}

/// Awaits the change that makes a test message final after one attempt (issue 12, defect 7).
#[tokio::test]
async fn a_test_message_with_a_wrong_password_fails_after_one_attempt() {
    let Some((postfix, app, acme)) = acme_through_postfix("login", "wrong-pw-456").await else {
        return;
    };
    let provider = app.first_provider_id(&acme).await;
    let (status, answer) = app
        .test_provider(&acme, &provider, json!({"to": "ops@example.net"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["message_id"].as_str().unwrap();

    let message = app.wait_for_attempts(&acme, id, 1).await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["outcome"], "failed", "final at once: {attempt}");
    let message = app.wait_for_status(&acme, id, "failed").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 1, "one login attempt only: {message}");
    let attempt = &attempts[0];
    assert_eq!(attempt["step"], "auth", "{attempt}");
    assert_eq!(attempt["code"], 535, "{attempt}");
    let failed: Vec<&Value> = attempt["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{attempt}");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("535 5.7.8 Error: authentication failed"),
        "{attempt}"
    );
    assert!(!message.to_string().contains("wrong-pw-456"));
    let log = postfix.log();
    assert_eq!(
        log.matches("SASL LOGIN authentication failed").count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn the_access_map_decides_per_recipient() {
    let Some((postfix, app, acme)) = acme_through_postfix("plain", PASSWORD).await else {
        return;
    };

    let id = app
        .submit(
            &acme,
            json!({"to": ["ok@example.net", REJECTED, LATER], "subject": "Three", "text": "per recipient"}),
        )
        .await;
    wait_for_recipient(&app, &acme, &id, "ok@example.net", &["sent"]).await;
    wait_for_recipient(&app, &acme, &id, REJECTED, &["failed"]).await;
    let message = wait_for_recipient(&app, &acme, &id, LATER, &["deferred", "queued"]).await;

    let rejected = recipient(&message, REJECTED);
    let attempts = rejected["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 550 is final: {rejected}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["step"], "rcpt", "{rejected}");
    assert_eq!(attempts[0]["code"], 550);
    assert_eq!(attempts[0]["enhanced_code"], "5.1.1");
    assert_eq!(
        attempts[0]["response"],
        format!("550 5.1.1 <{REJECTED}>: Recipient address rejected: rejected by the test map")
    );

    let later = &recipient(&message, LATER)["attempts"][0];
    assert_eq!(later["outcome"], "deferred", "{later}");
    assert_eq!(later["step"], "rcpt", "{later}");
    assert_eq!(later["code"], 450);
    assert_eq!(
        later["response"],
        format!("450 4.2.0 <{LATER}>: Recipient address rejected: later by the test map")
    );

    let raw = postfix.delivered("ok@example.net").await;
    let relayed: Vec<&str> = raw
        .lines()
        .filter(|l| l.starts_with("X-Rcpt-Args:"))
        .collect();
    assert_eq!(
        relayed,
        ["X-Rcpt-Args: <ok@example.net> ORCPT=rfc822;ok@example.net"],
        "{raw}"
    );
}

#[tokio::test]
async fn a_message_under_message_size_limit_is_sent() {
    let Some((postfix, app, acme)) = acme_through_postfix("plain", PASSWORD).await else {
        return;
    };

    // About 12 kB: under the limit with the headers Herald and Postfix add.
    let mut text = String::new();
    for line in 0..150 {
        writeln!(text, "line {line:03} {}", "x".repeat(70)).unwrap();
    }
    let id = app
        .submit(
            &acme,
            json!({"to": ["ok@example.net"], "subject": "Under the limit", "text": text}),
        )
        .await;
    app.wait_for_status(&acme, &id, "sent").await;
    let raw = postfix.delivered("ok@example.net").await;
    let parsed = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(lf(&parsed.body_text(0).unwrap()), text);
}

/// Awaits `SIZE=` on MAIL FROM (issue 12, defect 6): today the whole message is
/// uploaded and refused at the end of DATA.
#[tokio::test]
async fn a_message_over_message_size_limit_is_refused_at_mail() {
    let Some((postfix, app, acme)) = acme_through_postfix("plain", PASSWORD).await else {
        return;
    };

    let text = format!("{}\n", "y".repeat(70)).repeat(SIZE_LIMIT / 70 + 50);
    let id = app
        .submit(
            &acme,
            json!({"to": ["big@example.net"], "subject": "Over the limit", "text": text}),
        )
        .await;
    let message = app.wait_for_status(&acme, &id, "failed").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 1, "a 552 is final: {message}");
    let attempt = &attempts[0];
    assert_eq!(attempt["outcome"], "failed", "{attempt}");
    assert_eq!(attempt["step"], "mail", "refused at MAIL FROM: {attempt}");
    // Either Postfix refused the declared SIZE= (it answers that at MAIL FROM; at
    // the end of DATA it says "message file too big"), or Herald refused at once
    // because the message exceeds the SIZE Postfix advertised.
    let response = attempt["response"].as_str().unwrap();
    if response == "552 5.3.4 Message size exceeds fixed limit" {
        postfix
            .wait_for_log("the refusal at MAIL FROM", |log| {
                log.lines().any(|l| {
                    l.contains("NOQUEUE: reject: MAIL from")
                        && l.contains("552 5.3.4 Message size exceeds fixed limit")
                })
            })
            .await;
    } else {
        assert!(
            attempt["code"].is_null() && response.contains("SIZE"),
            "neither Postfix's refusal at MAIL FROM nor Herald's own: {attempt}"
        );
    }
    assert!(postfix.sink_files().is_empty());
}

/// Awaits QUIT before every close (issue 12, defect 3).
#[tokio::test]
async fn herald_says_quit_after_idling_and_after_a_failed_login() {
    let Some(postfix) = Postfix::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut entry = postfix.server_entry();
    entry["idle_timeout_secs"] = 1.into();

    let good = app
        .configured_tenant("good", entry.clone(), Some(account("plain", PASSWORD)))
        .await;
    let id = app.submit_to(&good, "ok@example.net", "Idle").await;
    app.wait_for_status(&good, &id, "sent").await;

    let bad = app
        .configured_tenant("bad", entry, Some(account("plain", "wrong-pw-789")))
        .await;
    let id = app.submit_to(&bad, "ops@example.net", "Refused").await;
    app.wait_for_attempts(&bad, &id, 1).await;

    // Every session Postfix saw has ended: the fixture's own probe, the idle
    // connection that delivered, and at least one refused login.
    let log = postfix
        .wait_for_log("every session ended", |log| {
            let connects = log.matches("]: connect from").count();
            let disconnects: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("]: disconnect from"))
                .collect();
            connects == disconnects.len()
                && disconnects.iter().any(|l| l.contains(" data=1"))
                && disconnects.iter().any(|l| l.contains(" auth=0/1"))
        })
        .await;
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lost connection after"))
        .collect();
    assert!(
        lost.is_empty(),
        "Herald closed without QUIT: {lost:#?}\n{log}"
    );
    // Postfix counts the commands of each session: `quit=1` when QUIT came.
    let without_quit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("]: disconnect from") && !l.contains(" quit=1"))
        .collect();
    assert!(
        without_quit.is_empty(),
        "sessions that ended without QUIT: {without_quit:#?}"
    );
}

/// A node whose SMTP listener (STARTTLS with a certificate for
/// [`HERALD_NAME`]) treats loopback like any network: AUTH only under TLS, as
/// from a remote relay. Returns the node and the CA that signed the certificate.
async fn app_with_smtp_listener() -> (TestApp, TestTls) {
    let tls = TestTls::generate(&[HERALD_NAME]);
    let app = spawn_app_with(|settings| {
        let cert = settings.data_dir.join("smtp-cert.pem");
        let key = settings.data_dir.join("smtp-key.pem");
        fs::write(&cert, tls.cert_pem()).unwrap();
        fs::write(&key, tls.key_pem()).unwrap();
        let mut smtp = herald_ingress::Settings::new(&settings.node_name);
        smtp.listen = Some("127.0.0.1:0".parse().unwrap());
        smtp.tls_cert = Some(cert);
        smtp.tls_key = Some(key);
        smtp.loopback_is_local = false;
        settings.smtp = Some(smtp);
    })
    .await;
    (app, tls)
}

/// Reads one SMTP reply, all its lines, and returns it.
async fn smtp_reply(stream: &mut BufReader<tokio::net::TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(DEADLINE, stream.read_line(&mut line))
            .await
            .expect("a reply in time")
            .unwrap();
        assert!(read > 0, "the server closed the connection after {reply:?}");
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// Hands a message to smtpd on `port` as an application on this host would
/// (plain SMTP, no AUTH); returns Postfix's queue id.
async fn hand_over(port: u16, from: &str, to: &str, content: &str) -> String {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    assert!(smtp_reply(&mut stream).await.starts_with("220 "));
    let mut queue_id = String::new();
    let steps = [
        ("EHLO app.example\r\n".to_owned(), "250"),
        (format!("MAIL FROM:<{from}>\r\n"), "250"),
        (format!("RCPT TO:<{to}>\r\n"), "250"),
        ("DATA\r\n".to_owned(), "354"),
        (format!("{content}.\r\n"), "250"),
        ("QUIT\r\n".to_owned(), "221"),
    ];
    for (command, expected) in steps {
        stream
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .unwrap();
        let reply = smtp_reply(&mut stream).await;
        assert!(
            reply.starts_with(expected),
            "Postfix answered {reply:?} to {command:?}"
        );
        if let Some(id) = reply.trim_end().split("queued as ").nth(1) {
            queue_id = id.to_owned();
        }
    }
    assert!(!queue_id.is_empty(), "Postfix named no queue id");
    queue_id
}

/// The `Received:` fields of a message's header section, unfolded, top first.
fn received_fields(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
        } else {
            fields.push(line.to_owned());
        }
    }
    fields.retain(|f| f.to_ascii_lowercase().starts_with("received:"));
    fields
}

/// Issue 16's acceptance: Postfix as the client. An application's Postfix
/// relays to Herald with `relayhost`, verified TLS and SASL client auth with
/// the tenant's SMTP credential; Herald stores the message (source smtp, that
/// credential) and delivers it to the tenant's provider.
#[tokio::test]
async fn postfix_relays_through_herald_with_tls_and_a_credential() {
    let (app, ca) = app_with_smtp_listener().await;
    let herald_port = app
        .node
        .as_ref()
        .unwrap()
        .smtp_addr
        .expect("the SMTP listener listens")
        .port();
    let provider = TestSmtpServer::start().await;
    let acme = app.tenant_sending_to("acme", provider.port()).await;
    let credential = app
        .create_as_admin(&acme, "smtp-credentials", json!({"name": "postfix relay"}))
        .await;
    let field = |name: &str| credential[name].as_str().unwrap().to_owned();
    let herald = HeraldRelay {
        port: herald_port,
        ca_pem: ca.ca_pem(),
        username: field("username"),
        password: field("password"),
    };
    let Some(postfix) = Postfix::relaying_to(&herald).await else {
        return;
    };

    let to = "ops@example.net";
    let text = "The nightly backup of db-1 finished.\r\n..\r\nThe line above is a lone dot.\r\n";
    let content = format!(
        "From: Cron Daemon <root@app.example>\r\nTo: <{to}>\r\n\
         Subject: Nightly backup finished\r\nMessage-ID: <backup-1@app.example>\r\n\
         Date: Mon, 30 Nov 2026 18:00:00 +0000\r\n\r\n{text}"
    );
    let queue_id = hand_over(postfix.port, "root@app.example", to, &content).await;

    // Postfix relayed it over verified TLS and was answered 250 after Herald's commit.
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{herald_port}");
    let log = postfix
        .wait_for_log("the message relayed to Herald", |log| {
            log.lines().any(|l| {
                l.contains(&format!("{queue_id}: to=<{to}>"))
                    && l.contains(&relay)
                    && l.contains("status=sent")
            })
        })
        .await;
    let sent = log
        .lines()
        .find(|l| l.contains(&format!("{queue_id}: to=<{to}>")) && l.contains("status=sent"))
        .unwrap();
    let (_, herald_reply) = sent
        .split_once("status=sent (")
        .unwrap_or_else(|| panic!("{sent}"));
    let message_id = herald_reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not Herald's 250 after DATA: {sent}"));
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{herald_port}: TLSv1.3"
        )),
        "{log}"
    );
    assert!(!log.contains(&herald.password), "{log}");

    // Herald stored it as SMTP mail from that credential and delivered it.
    let message = app.wait_for_status(&acme, message_id, "sent").await;
    assert_eq!(message["source"], "smtp", "{message}");
    assert_eq!(
        message["smtp"]["credential_id"], credential["id"],
        "{message}"
    );
    assert!(message["smtp"]["connector_id"].is_null(), "{message}");
    assert_eq!(message["smtp"]["client_addr"], "127.0.0.1", "{message}");
    assert_eq!(message["subject"], "Nightly backup finished", "{message}");
    let attempt = first_attempt_of(&message);
    assert_eq!(
        attempt["sender_policy"], "fixed, reply-to the original From",
        "{attempt}"
    );

    let delivered = provider.wait_for_messages(1, DEADLINE).await;
    assert_eq!(delivered.len(), 1);
    let delivered = &delivered[0];
    assert_eq!(delivered.rcpt_to, [to]);
    assert_eq!(delivered.mail_from, "alerts@acme.example");
    assert_eq!(
        delivered.header("Message-ID").as_deref(),
        Some("<backup-1@app.example>")
    );
    assert_eq!(
        delivered.header("Reply-To").as_deref(),
        Some("Cron Daemon <root@app.example>")
    );
    let body = String::from_utf8(delivered.body()).unwrap();
    assert_eq!(body, text.replace("\r\n..\r\n", "\r\n.\r\n"));
    // The trace, newest first: Herald's (Postfix's client, under TLS, logged
    // in), then Postfix's smtpd's (the application).
    let received = received_fields(&delivered.data);
    assert_eq!(received.len(), 2, "{received:#?}");
    assert!(
        received[0].starts_with("Received: from postfix.test ([127.0.0.1])")
            && received[0].contains("by test-node (Herald) with ESMTPSA id")
            && received[0].contains("(using TLSv1.3 with cipher"),
        "{received:#?}"
    );
    assert!(
        received[1].starts_with("Received: from app.example (")
            && received[1].contains(&format!(
                "by postfix.test (Postfix) with ESMTP id {queue_id}"
            )),
        "{received:#?}"
    );
}
