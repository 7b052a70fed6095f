//! What the listener's tests share: a backend that keeps what it accepts in
//! memory, a listener started on port 0, and a small line-level SMTP client.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use herald_core::TenantId;
use herald_ingress::{Backend, Client, Envelope, Listener, Refusal, Sender, Settings};
use herald_testsmtp::TestTls;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const USER: &str = "grafana";
pub const PASSWORD: &str = "s3cret-pass";

/// A backend with one credential, an optional connector for every address,
/// and the messages it accepted.
#[derive(Default)]
pub struct Memory {
    pub accepted: Mutex<Vec<(Client, Envelope)>>,
    /// The connector every address matches, when set.
    pub connector: Mutex<Option<Client>>,
    /// The credential's rate limit.
    pub credential_rate: Mutex<Option<u32>>,
    /// What `accept` answers instead of storing, when set.
    pub refuse: Mutex<Option<Refusal>>,
    /// What `login` and `connector` answer instead of looking, when set.
    pub unavailable: Mutex<Option<Refusal>>,
    pub tenant: TenantId,
}

impl Memory {
    pub fn new() -> Arc<Memory> {
        Arc::new(Memory {
            tenant: TenantId::new(),
            ..Memory::default()
        })
    }

    pub fn with_connector(rate: Option<u32>) -> Arc<Memory> {
        let memory = Memory::new();
        *memory.connector.lock().unwrap() = Some(Client {
            tenant_id: memory.tenant,
            by: Sender::Connector("conn-1".into()),
            rate_limit_per_minute: rate,
        });
        memory
    }

    pub fn messages(&self) -> Vec<(Client, Envelope)> {
        self.accepted.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Backend for Memory {
    async fn login(&self, username: &str, password: &str) -> Result<Option<Client>, Refusal> {
        if let Some(refusal) = self.unavailable.lock().unwrap().clone() {
            return Err(refusal);
        }
        Ok((username == USER && password == PASSWORD).then(|| Client {
            tenant_id: self.tenant,
            by: Sender::Credential("cred-1".into()),
            rate_limit_per_minute: *self.credential_rate.lock().unwrap(),
        }))
    }

    async fn connector(&self, _ip: IpAddr) -> Result<Option<Client>, Refusal> {
        if let Some(refusal) = self.unavailable.lock().unwrap().clone() {
            return Err(refusal);
        }
        Ok(self.connector.lock().unwrap().clone())
    }

    async fn accept(&self, client: &Client, envelope: Envelope) -> Result<String, Refusal> {
        if let Some(refusal) = self.refuse.lock().unwrap().clone() {
            return Err(refusal);
        }
        let mut accepted = self.accepted.lock().unwrap();
        accepted.push((client.clone(), envelope));
        Ok(format!("msg-{}", accepted.len()))
    }
}

/// A running listener.
pub struct Harness {
    pub addr: SocketAddr,
    pub smtps: Option<SocketAddr>,
    pub backend: Arc<Memory>,
    pub tls: Option<TestTls>,
    pub files: Option<(PathBuf, PathBuf)>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test's certificate files.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "herald-ingress-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the certificate and key where the settings say.
pub fn write_certificate(tls: &TestTls, (cert, key): &(PathBuf, PathBuf)) {
    std::fs::write(cert, tls.cert_pem()).unwrap();
    std::fs::write(key, tls.key_pem()).unwrap();
}

pub fn settings() -> Settings {
    let mut settings = Settings::new("mx.herald.test");
    settings.listen = Some("127.0.0.1:0".parse().unwrap());
    settings
}

/// Starts a listener; `tls` gives it a certificate (in files) for `localhost`.
pub async fn start(backend: Arc<Memory>, tls: bool, mut settings: Settings) -> Harness {
    let (tls, files) = if tls {
        let tls = TestTls::generate(&["localhost"]);
        let dir = scratch_dir();
        let files = (dir.join("cert.pem"), dir.join("key.pem"));
        write_certificate(&tls, &files);
        settings.tls_cert = Some(files.0.clone());
        settings.tls_key = Some(files.1.clone());
        (Some(tls), Some(files))
    } else {
        (None, None)
    };
    let listener = Listener::bind(settings, backend.clone()).await.unwrap();
    let addr = listener
        .local_addr()
        .unwrap_or_else(|| "127.0.0.1:1".parse().unwrap());
    let smtps = listener.smtps_addr();
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(listener.serve(stopping));
    Harness {
        addr,
        smtps,
        backend,
        tls,
        files,
        stop,
        task,
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-level SMTP client.
pub struct Smtp {
    stream: BufReader<Box<dyn Io>>,
}

/// One reply: its code and its lines' text (after the code and separator).
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Answer {
    /// The first line, e.g. `5.5.2 Line too long`.
    pub fn text(&self) -> &str {
        &self.lines[0]
    }

    pub fn is(&self, code: u16, enhanced: &str) -> bool {
        self.code == code && self.text().starts_with(enhanced)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" | "))
    }
}

#[track_caller]
pub fn expect(answer: &Answer, code: u16, enhanced: &str) {
    assert!(
        answer.is(code, enhanced),
        "expected {code} {enhanced}, got {answer}"
    );
}

impl Smtp {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Smtp {
        let mut smtp = Smtp::open(addr).await;
        let greeting = smtp.read().await.expect("a greeting");
        assert_eq!(greeting.code, 220, "{greeting}");
        smtp
    }

    /// Connects without reading anything.
    pub async fn open(addr: SocketAddr) -> Smtp {
        let stream = TcpStream::connect(addr).await.unwrap();
        Smtp {
            stream: BufReader::new(Box::new(stream)),
        }
    }

    /// Connects over implicit TLS and reads the greeting.
    pub async fn connect_tls(addr: SocketAddr, tls: &TestTls) -> Smtp {
        let stream = TcpStream::connect(addr).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls.client_config())
            .connect("localhost".try_into().unwrap(), stream)
            .await
            .expect("the TLS handshake");
        let mut smtp = Smtp {
            stream: BufReader::new(Box::new(stream)),
        };
        let greeting = smtp.read().await.expect("a greeting");
        assert_eq!(greeting.code, 220, "{greeting}");
        smtp
    }

    /// Reads one reply; `None` when the server closed.
    pub async fn read(&mut self) -> Option<Answer> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read_line(&mut line))
                .await
                .expect("a reply within 30 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            assert!(
                line.ends_with("\r\n"),
                "a reply line ends with CRLF: {line:?}"
            );
            let code: u16 = line[..3].parse().expect("a reply code");
            lines.push(line[4..line.len() - 2].to_owned());
            if line.as_bytes()[3] == b' ' {
                return Some(Answer { code, lines });
            }
        }
    }

    /// Whether the server closed the connection (after any replies still unread).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(30), self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        ) && rest.is_empty()
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes.as_ref()).await.unwrap();
        stream.flush().await.unwrap();
    }

    /// Sends a command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Answer {
        self.send(format!("{line}\r\n")).await;
        self.read().await.expect("a reply")
    }

    /// Sends each command line in turn and expects its reply's code and
    /// enhanced code.
    pub async fn expect_replies(&mut self, dialogue: &[(&str, u16, &str)]) {
        for &(line, code, enhanced) in dialogue {
            let answer = self.command(line).await;
            assert!(
                answer.is(code, enhanced),
                "{line}: expected {code} {enhanced}, got {answer}"
            );
        }
    }

    /// EHLO; returns the keywords.
    pub async fn ehlo(&mut self) -> Vec<String> {
        let answer = self.command("EHLO client.test").await;
        assert_eq!(answer.code, 250, "{answer}");
        answer.lines[1..].to_vec()
    }

    /// A TLS handshake on the connection as it is, trusting `tls`'s CA; `None` when it fails.
    pub async fn handshake(self, tls: &TestTls) -> Option<Smtp> {
        let stream = self.stream.into_inner();
        let stream = tokio_rustls::TlsConnector::from(tls.client_config())
            .connect("localhost".try_into().unwrap(), stream)
            .await
            .ok()?;
        Some(Smtp {
            stream: BufReader::new(Box::new(stream)),
        })
    }

    /// STARTTLS and the handshake, trusting `tls`'s CA.
    pub async fn starttls(self, tls: &TestTls) -> Smtp {
        let mut smtp = self;
        expect(&smtp.command("STARTTLS").await, 220, "2.0.0");
        let stream = smtp.stream.into_inner();
        let stream = tokio_rustls::TlsConnector::from(tls.client_config())
            .connect("localhost".try_into().unwrap(), stream)
            .await
            .expect("the TLS handshake after STARTTLS");
        Smtp {
            stream: BufReader::new(Box::new(stream)),
        }
    }

    /// AUTH PLAIN with an initial response.
    pub async fn login(&mut self, user: &str, password: &str) -> Answer {
        let response =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {response}")).await
    }

    /// Connects, reads the greeting and says EHLO.
    pub async fn connect_ehlo(addr: SocketAddr) -> Smtp {
        let mut smtp = Smtp::connect(addr).await;
        smtp.ehlo().await;
        smtp
    }

    /// MAIL and one RCPT, each expected to succeed (250 2.1.0, 250 2.1.5).
    pub async fn begin_mail(&mut self, from: &str, to: &str) {
        expect(
            &self.command(&format!("MAIL FROM:<{from}>")).await,
            250,
            "2.1.0",
        );
        expect(
            &self.command(&format!("RCPT TO:<{to}>")).await,
            250,
            "2.1.5",
        );
    }

    /// MAIL, one RCPT and DATA, expecting 250, 250 and 354: the message may follow.
    pub async fn begin_data(&mut self, from: &str, to: &str) {
        self.begin_mail(from, to).await;
        assert_eq!(self.command("DATA").await.code, 354);
    }

    /// [`Smtp::send_mail`] from `app@example.test` to `ops@example.test`.
    pub async fn send_message(&mut self, message: &[u8]) -> Answer {
        self.send_mail("app@example.test", "ops@example.test", message)
            .await
    }

    /// [`Smtp::send_message`], expecting it to be accepted (250 2.0.0); returns that reply.
    pub async fn deliver(&mut self, message: &[u8]) -> Answer {
        let answer = self.send_message(message).await;
        expect(&answer, 250, "2.0.0");
        answer
    }

    /// MAIL, one RCPT, DATA and the message (dot-stuffed here); returns the final reply.
    pub async fn send_mail(&mut self, from: &str, to: &str, message: &[u8]) -> Answer {
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await;
        if mail.code != 250 {
            return mail;
        }
        expect(
            &self.command(&format!("RCPT TO:<{to}>")).await,
            250,
            "2.1.5",
        );
        let data = self.command("DATA").await;
        assert_eq!(data.code, 354, "{data}");
        self.send(stuffed(message)).await;
        self.read().await.expect("a reply to the message")
    }
}

/// A message with CRLF line ends as it goes after DATA: dot-stuffed, with the terminator.
pub fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 1024);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The envelope's recipients' addresses, in their order.
pub fn recipients(envelope: &Envelope) -> Vec<String> {
    envelope
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The message as stored, without the `Received:` header the listener added.
pub fn without_received(data: &[u8]) -> &[u8] {
    assert!(data.starts_with(b"Received: "), "a Received header first");
    // The header's last line is its date: the first line not starting with a tab after the first.
    let mut pos = 0;
    loop {
        let end = pos + data[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        pos = end;
        if data.get(pos) != Some(&b'\t') {
            return &data[pos..];
        }
    }
}

pub const MESSAGE: &[u8] =
    b"From: app@example.test\r\nTo: ops@example.test\r\nSubject: hello\r\n\r\nbody\r\n";

pub fn remote() -> herald_ingress::Settings {
    // Tests can only connect over loopback: with this off, the client is
    // treated as a remote one.
    let mut settings = settings();
    settings.loopback_is_local = false;
    settings
}

/// A 10 MiB message with an attachment, as MIME would carry it.
pub fn big_message(size: usize) -> Vec<u8> {
    let mut message = b"From: app@example.test\r\nTo: ops@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n.\r\n..\r\n\
--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"report.bin\"\r\n\r\n"
        .to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut n = 0usize;
    let end = b"\r\n--b1--\r\n";
    while message.len() + 78 + end.len() <= size {
        for _ in 0..76 {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            message.push(alphabet[(n >> 16) % 64]);
        }
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(end);
    message
}
