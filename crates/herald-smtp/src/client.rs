//! One SMTP client session: connect, greet, secure, authenticate, and run transactions.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::{EmailAddress, Mechanism, Port, Secret, Security, SmtpHost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ErrorKind, SmtpError, Step};
use crate::stream::Stream;
use crate::{Reply, TlsSettings, Tracer};

/// The longest reply line accepted, and the most lines in one reply; a server
/// that sends more is broken or hostile.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 128;

/// How long each step may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// Each command's reply.
    pub command: Duration,
    /// The reply after the end of DATA, when the server may be scanning the message.
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(60),
            data: Duration::from_secs(180),
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's name or address.
    pub host: SmtpHost,
    /// Its port.
    pub port: Port,
    /// Plaintext, STARTTLS or implicit TLS.
    pub security: Security,
    /// Certificate checking.
    pub tls: TlsSettings,
    /// The name Herald gives in EHLO.
    pub helo_name: String,
    /// Per-step timeouts.
    pub timeouts: Timeouts,
    /// The addresses this target may be connected to; `None` for the operator's own relay.
    pub egress: Option<std::sync::Arc<crate::Egress>>,
    /// Whether AUTH may be sent over an unencrypted session (`security: none`).
    pub allow_plaintext_auth: bool,
}

/// An SMTP account's login.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// PLAIN, LOGIN or XOAUTH2.
    pub mechanism: Mechanism,
    /// The account's user name.
    pub username: String,
    /// The password, or the OAuth2 access token for XOAUTH2.
    pub secret: Secret,
}

/// The envelope of one transaction.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// MAIL FROM.
    pub from: EmailAddress,
    /// RCPT TO, one command each.
    pub to: Vec<EmailAddress>,
}

/// The negotiated TLS parameters of a session.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// For example `TLSv1_3`.
    pub version: String,
    /// For example `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// The replies of one transaction: one for MAIL, one per recipient, and the end of DATA.
#[derive(Clone, Debug)]
pub struct Transaction {
    /// The reply to MAIL FROM.
    pub mail: Reply,
    /// The reply to each RCPT TO, in envelope order; empty when MAIL was refused without pipelining.
    pub rcpt: Vec<Reply>,
    /// The reply after the message content; `None` when no recipient was accepted.
    pub data: Option<Reply>,
}

impl Transaction {
    /// The reply that decides recipient `i`: MAIL's when it was refused,
    /// else the recipient's own when refused, else the end of DATA's.
    pub fn outcome_for(&self, i: usize) -> &Reply {
        if !self.mail.is_positive() {
            return &self.mail;
        }
        match self.rcpt.get(i) {
            Some(rcpt) if !rcpt.is_positive() => rcpt,
            Some(rcpt) => self.data.as_ref().unwrap_or(rcpt),
            None => &self.mail,
        }
    }
}

/// An open, greeted (and, as configured, secured and authenticated) SMTP session.
pub struct Connection {
    stream: Stream,
    buffer: Vec<u8>,
    extensions: BTreeSet<String>,
    auth_mechanisms: Vec<String>,
    remote: SocketAddr,
    tls: Option<TlsInfo>,
    timeouts: Timeouts,
    tracer: Option<Tracer>,
}

impl Connection {
    /// Resolves, connects, reads the greeting, says EHLO, secures and authenticates.
    pub async fn open(
        target: &Target,
        credentials: Option<&Credentials>,
    ) -> Result<Connection, SmtpError> {
        Self::open_inner(target, credentials, None).await
    }

    /// Like [`Connection::open`], recording every step of the session in
    /// `tracer`, including the step that failed.
    pub async fn open_traced(
        target: &Target,
        credentials: Option<&Credentials>,
        tracer: &Tracer,
    ) -> Result<Connection, SmtpError> {
        let result = Self::open_inner(target, credentials, Some(tracer.clone())).await;
        if let Err(error) = &result {
            tracer.fail(error);
        }
        result
    }

    async fn open_inner(
        target: &Target,
        credentials: Option<&Credentials>,
        tracer: Option<Tracer>,
    ) -> Result<Connection, SmtpError> {
        let (tcp, remote) = connect(target, tracer.as_ref()).await?;
        let mut conn = Connection {
            stream: Stream::Plain(tcp),
            buffer: Vec::new(),
            extensions: BTreeSet::new(),
            auth_mechanisms: Vec::new(),
            remote,
            tls: None,
            timeouts: target.timeouts,
            tracer,
        };
        if target.security == Security::Tls {
            conn.upgrade(target).await?;
        }
        conn.expect(Step::Greeting).await?;
        conn.ehlo(&target.helo_name).await?;
        if target.security == Security::StartTls {
            if !conn.extensions.contains("STARTTLS") {
                return Err(SmtpError::new(
                    Step::StartTls,
                    ErrorKind::StartTlsNotOffered,
                ));
            }
            conn.command(Step::StartTls, b"STARTTLS\r\n").await?;
            // Anything the server sent after its 220 was sent in plaintext
            // before the handshake and must not be read as a reply (CVE-2011-0411).
            conn.buffer.clear();
            conn.upgrade(target).await?;
            conn.ehlo(&target.helo_name).await?;
        }
        if let Some(credentials) = credentials {
            let offered = conn.auth_mechanisms.join(" ");
            conn.note(
                Step::Auth,
                format!(
                    "offered: {offered}; using {} as {}",
                    credentials.mechanism.as_str().to_ascii_uppercase(),
                    credentials.username
                ),
            );
            conn.authenticate(credentials).await?;
            tracing::debug!(mechanism = %credentials.mechanism, username = %credentials.username, "authenticated");
        }
        Ok(conn)
    }

    /// The address actually connected to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The TLS parameters, when the session is encrypted.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// `MAIL FROM`, with `SMTPUTF8` when an address of the envelope or the
    /// header section is internationalised (RFC 6531); such a message cannot go
    /// to a server that does not offer it, which retrying does not mend.
    fn mail_command(&self, envelope: &Envelope, ascii_headers: bool) -> Result<String, SmtpError> {
        let ascii = ascii_headers
            && envelope.from.is_ascii()
            && envelope.to.iter().all(EmailAddress::is_ascii);
        if ascii {
            return Ok(format!("MAIL FROM:<{}>\r\n", envelope.from));
        }
        if !self.extensions.contains("SMTPUTF8") {
            return Err(SmtpError::new(Step::Mail, ErrorKind::Utf8NotOffered));
        }
        Ok(format!("MAIL FROM:<{}> SMTPUTF8\r\n", envelope.from))
    }

    /// Runs one transaction. `content` must come from [`crate::wire::dot_stuffed`].
    ///
    /// When the server offers PIPELINING, MAIL, every RCPT and DATA leave in
    /// one write and the body in another. A refused recipient does not stop the
    /// others; the connection stays usable for the next transaction.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<Transaction, SmtpError> {
        // Only addresses put UTF-8 in a header section: mail-builder encodes names
        // and the subject as encoded words.
        let head_end = content
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(content.len());
        let mail_cmd = self.mail_command(envelope, content[..head_end].is_ascii())?;
        let rcpt_cmds: Vec<String> = envelope
            .to
            .iter()
            .map(|to| format!("RCPT TO:<{to}>\r\n"))
            .collect();

        if self.extensions.contains("PIPELINING") {
            let mut batch = mail_cmd.into_bytes();
            for rcpt in &rcpt_cmds {
                batch.extend_from_slice(rcpt.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.write(Step::Mail, &batch).await?;
            let mail = self.reply(Step::Mail).await?;
            let mut rcpt = Vec::with_capacity(rcpt_cmds.len());
            for _ in &rcpt_cmds {
                rcpt.push(self.reply(Step::Rcpt).await?);
            }
            let data_cmd = self.reply(Step::Data).await?;
            let accepted = mail.is_positive() && rcpt.iter().any(Reply::is_positive);
            let data = if data_cmd.code == 354 {
                // A server that took DATA without a valid recipient gets an
                // empty message, which it must then refuse (RFC 2920 3.1).
                let body: &[u8] = if accepted { content } else { b".\r\n" };
                self.write(Step::Data, body).await?;
                let end = self.reply_within(Step::Data, self.timeouts.data).await?;
                accepted.then_some(end)
            } else {
                accepted.then_some(data_cmd)
            };
            if data.as_ref().is_none_or(|r| !r.is_positive()) {
                self.reset().await?;
            }
            return Ok(Transaction { mail, rcpt, data });
        }

        self.write(Step::Mail, mail_cmd.as_bytes()).await?;
        let mail = self.reply(Step::Mail).await?;
        if !mail.is_positive() {
            self.reset().await?;
            return Ok(Transaction {
                mail,
                rcpt: Vec::new(),
                data: None,
            });
        }
        let mut rcpt = Vec::with_capacity(rcpt_cmds.len());
        for cmd in &rcpt_cmds {
            self.write(Step::Rcpt, cmd.as_bytes()).await?;
            rcpt.push(self.reply(Step::Rcpt).await?);
        }
        if !rcpt.iter().any(Reply::is_positive) {
            self.reset().await?;
            return Ok(Transaction {
                mail,
                rcpt,
                data: None,
            });
        }
        self.write(Step::Data, b"DATA\r\n").await?;
        let data_cmd = self.reply(Step::Data).await?;
        let data = if data_cmd.code == 354 {
            self.write(Step::Data, content).await?;
            self.reply_within(Step::Data, self.timeouts.data).await?
        } else {
            data_cmd
        };
        if !data.is_positive() {
            self.reset().await?;
        }
        Ok(Transaction {
            mail,
            rcpt,
            data: Some(data),
        })
    }

    /// Says QUIT and closes, ignoring what the server answers: the work is done.
    pub async fn quit(mut self) {
        if self.write(Step::Quit, b"QUIT\r\n").await.is_ok() {
            let _ = self.reply(Step::Quit).await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// Asks MAIL FROM and RCPT TO for each recipient, then resets: whether the
    /// server would take the envelope, without sending a message.
    pub async fn check_envelope(&mut self, envelope: &Envelope) -> Result<Vec<Reply>, SmtpError> {
        let mut replies = Vec::with_capacity(envelope.to.len() + 1);
        self.write(Step::Mail, self.mail_command(envelope, true)?.as_bytes())
            .await?;
        let mail = self.reply(Step::Mail).await?;
        let accepted = mail.is_positive();
        replies.push(mail);
        if accepted {
            for to in &envelope.to {
                self.write(Step::Rcpt, format!("RCPT TO:<{to}>\r\n").as_bytes())
                    .await?;
                replies.push(self.reply(Step::Rcpt).await?);
            }
        }
        self.reset().await?;
        Ok(replies)
    }

    async fn reset(&mut self) -> Result<(), SmtpError> {
        self.command(Step::Data, b"RSET\r\n").await.map(drop)
    }

    async fn ehlo(&mut self, helo_name: &str) -> Result<(), SmtpError> {
        let reply = self
            .command(Step::Ehlo, format!("EHLO {helo_name}\r\n").as_bytes())
            .await?;
        tracing::debug!(reply = %reply, "EHLO answered");
        self.extensions.clear();
        self.auth_mechanisms.clear();
        for line in reply.text.lines().skip(1) {
            let line = line.get(4..).unwrap_or_default().to_ascii_uppercase();
            let mut words = line.split_whitespace();
            if let Some(keyword) = words.next() {
                if keyword == "AUTH" {
                    self.auth_mechanisms.extend(words.map(str::to_owned));
                }
                self.extensions.insert(keyword.to_owned());
            }
        }
        Ok(())
    }

    async fn authenticate(&mut self, credentials: &Credentials) -> Result<(), SmtpError> {
        let wanted = credentials.mechanism.as_str().to_ascii_uppercase();
        if !self.auth_mechanisms.contains(&wanted) {
            let offered = if self.auth_mechanisms.is_empty() {
                "none".to_owned()
            } else {
                self.auth_mechanisms.join(" ")
            };
            return Err(SmtpError::new(
                Step::Auth,
                ErrorKind::AuthNotOffered { wanted, offered },
            ));
        }
        let user = &credentials.username;
        let secret = credentials.secret.expose();
        match credentials.mechanism {
            Mechanism::Plain => {
                let token = B64.encode(format!("\0{user}\0{secret}"));
                self.command(Step::Auth, format!("AUTH PLAIN {token}\r\n").as_bytes())
                    .await?;
            }
            Mechanism::Login => {
                self.intermediate(b"AUTH LOGIN\r\n").await?;
                self.intermediate(format!("{}\r\n", B64.encode(user)).as_bytes())
                    .await?;
                self.command(Step::Auth, format!("{}\r\n", B64.encode(secret)).as_bytes())
                    .await?;
            }
            Mechanism::Xoauth2 => {
                let token = B64.encode(format!("user={user}\x01auth=Bearer {secret}\x01\x01"));
                self.write(Step::Auth, format!("AUTH XOAUTH2 {token}\r\n").as_bytes())
                    .await?;
                let mut reply = self.reply(Step::Auth).await?;
                if reply.is_intermediate() {
                    // The server explains the refusal in a base64 JSON challenge;
                    // an empty line asks for the final reply.
                    self.write(Step::Auth, b"\r\n").await?;
                    reply = self.reply(Step::Auth).await?;
                }
                if !reply.is_positive() {
                    return Err(SmtpError::new(Step::Auth, ErrorKind::Rejected(reply)));
                }
            }
        }
        Ok(())
    }

    /// Sends one AUTH exchange line and requires a 334 challenge.
    async fn intermediate(&mut self, line: &[u8]) -> Result<(), SmtpError> {
        self.write(Step::Auth, line).await?;
        let reply = self.reply(Step::Auth).await?;
        if reply.code != 334 {
            return Err(SmtpError::new(Step::Auth, ErrorKind::Rejected(reply)));
        }
        Ok(())
    }

    async fn upgrade(&mut self, target: &Target) -> Result<(), SmtpError> {
        let tls_error = |e: String| SmtpError::new(Step::Tls, ErrorKind::Tls(e));
        let connector = target.tls.connector().map_err(tls_error)?;
        let name = target
            .tls
            .server_name(target.host.as_ref())
            .map_err(tls_error)?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(tls_error("the session is already encrypted".into()));
        };
        let handshake = tokio::time::timeout(target.timeouts.connect, connector.connect(name, tcp));
        let tls = handshake
            .await
            .map_err(|_| SmtpError::new(Step::Tls, ErrorKind::Timeout))?
            .map_err(|e| tls_error(e.to_string()))?;
        let (_, session) = tls.get_ref();
        self.tls = Some(TlsInfo {
            version: session
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: session
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
        });
        tracing::debug!(tls = ?self.tls, "TLS established");
        if self.tracer.is_some() {
            let certificate = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| crate::trace::describe_certificate(cert))
                .unwrap_or_else(|| "no certificate".into());
            let info = self.tls.clone().unwrap_or(TlsInfo {
                version: String::new(),
                cipher: String::new(),
            });
            self.note(
                Step::Tls,
                format!("{} {}; {certificate}", info.version, info.cipher),
            );
        }
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Sends a command and requires a positive (2xx) reply.
    async fn command(&mut self, step: Step, line: &[u8]) -> Result<Reply, SmtpError> {
        self.write(step, line).await?;
        self.expect(step).await
    }

    /// Reads a reply and requires it to be positive.
    async fn expect(&mut self, step: Step) -> Result<Reply, SmtpError> {
        let reply = self.reply(step).await?;
        if !reply.is_positive() {
            return Err(SmtpError::new(step, ErrorKind::Rejected(reply)));
        }
        Ok(reply)
    }

    async fn write(&mut self, step: Step, bytes: &[u8]) -> Result<(), SmtpError> {
        let io = |e| SmtpError::new(step, ErrorKind::Io(e));
        tokio::time::timeout(self.timeouts.command, async {
            self.stream.write_all(bytes).await.map_err(io)?;
            self.stream.flush().await.map_err(io)
        })
        .await
        .map_err(|_| SmtpError::new(step, ErrorKind::Timeout))?
    }

    async fn reply(&mut self, step: Step) -> Result<Reply, SmtpError> {
        self.reply_within(step, self.timeouts.command).await
    }

    async fn reply_within(&mut self, step: Step, limit: Duration) -> Result<Reply, SmtpError> {
        let reply = tokio::time::timeout(limit, self.read_reply(step))
            .await
            .map_err(|_| SmtpError::new(step, ErrorKind::Timeout))??;
        self.note(step, reply.text.clone());
        Ok(reply)
    }

    /// Records a step when the session is traced.
    fn note(&self, step: Step, detail: impl Into<String>) {
        if let Some(tracer) = &self.tracer {
            tracer.note(step, true, detail);
        }
    }

    async fn read_reply(&mut self, step: Step) -> Result<Reply, SmtpError> {
        let protocol = |what: &str| SmtpError::new(step, ErrorKind::Protocol(what.to_owned()));
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(step).await?;
            let last = line.len() == 3 || line.as_bytes().get(3) == Some(&b' ');
            let continues = line.as_bytes().get(3) == Some(&b'-');
            if !last && !continues {
                return Err(protocol("malformed reply line"));
            }
            if lines
                .first()
                .is_some_and(|first: &String| first.get(..3) != line.get(..3))
            {
                return Err(protocol("reply lines with different codes"));
            }
            lines.push(line);
            if last {
                break;
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(protocol("reply has too many lines"));
            }
        }
        Reply::from_lines(&lines).ok_or_else(|| protocol("reply without a valid code"))
    }

    async fn read_line(&mut self, step: Step) -> Result<String, SmtpError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                // A NUL in a reply is the server's fault; it must not make the
                // attempt unstorable, so it becomes U+FFFD like any invalid byte.
                return Ok(String::from_utf8_lossy(&line).replace('\0', "\u{FFFD}"));
            }
            if self.buffer.len() > MAX_REPLY_LINE {
                return Err(SmtpError::new(
                    step,
                    ErrorKind::Protocol("reply line too long".into()),
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| SmtpError::new(step, ErrorKind::Io(e)))?;
            if n == 0 {
                let closed = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                );
                return Err(SmtpError::new(step, ErrorKind::Io(closed)));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Resolves the target's host and keeps the addresses its egress policy
/// permits: the only ones [`Connection::open`] connects to. A caller that must
/// not act for a forbidden server (fetch an OAuth2 token for it) checks here
/// first; the connection checks again on its own answer.
pub async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, SmtpError> {
    let port = target.port.get();
    let addrs: Vec<SocketAddr> = match target.host.ip() {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::time::timeout(
            target.timeouts.connect,
            tokio::net::lookup_host((target.host.as_ref(), port)),
        )
        .await
        .map_err(|_| SmtpError::new(Step::Dns, ErrorKind::Timeout))?
        .map_err(|e| SmtpError::new(Step::Dns, ErrorKind::Dns(e.to_string())))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(SmtpError::new(
            Step::Dns,
            ErrorKind::Dns("no address".into()),
        ));
    }
    // Checked on the resolved addresses, which are then the ones connected to,
    // so a DNS answer that changes between check and connect cannot slip through.
    let addrs: Vec<SocketAddr> = match &target.egress {
        Some(egress) => addrs
            .into_iter()
            .filter(|a| egress.permits(a.ip()))
            .collect(),
        None => addrs,
    };
    if addrs.is_empty() {
        return Err(SmtpError::new(Step::Connect, ErrorKind::EgressDenied));
    }
    Ok(addrs)
}

/// Resolves the host and connects to the first permitted address that answers.
async fn connect(
    target: &Target,
    tracer: Option<&Tracer>,
) -> Result<(TcpStream, SocketAddr), SmtpError> {
    let addrs = resolve(target).await?;
    if let Some(tracer) = tracer {
        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        tracer.note(
            Step::Dns,
            true,
            format!("{} resolves to {}", target.host, list.join(", ")),
        );
    }
    let mut last_error = None;
    for addr in addrs {
        match tokio::time::timeout(target.timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                // Without this, Nagle holds small writes until the peer's delayed ACK (FINDINGS.md).
                tcp.set_nodelay(true)
                    .map_err(|e| SmtpError::new(Step::Connect, ErrorKind::Io(e)))?;
                tracing::debug!(remote = %addr, "connected");
                if let Some(tracer) = tracer {
                    tracer.note(Step::Connect, true, format!("connected to {addr}"));
                }
                return Ok((tcp, addr));
            }
            Ok(Err(e)) => last_error = Some(SmtpError::new(Step::Connect, ErrorKind::Io(e))),
            Err(_) => last_error = Some(SmtpError::new(Step::Connect, ErrorKind::Timeout)),
        }
    }
    Err(last_error.expect("at least one address was tried"))
}
