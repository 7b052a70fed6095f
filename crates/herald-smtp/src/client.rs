//! One SMTP client session: connect, greet, secure, authenticate, and run transactions.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::{EmailAddress, Mechanism, Port, Secret, Security, SmtpHost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ErrorKind, SmtpError, Step, Utf8Need};
use crate::stream::{Acking, Stream};
use crate::{Reply, TlsSettings, Tracer};

/// The longest reply line accepted, and the most lines in one reply; a server
/// that sends more is broken or hostile.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 128;
/// The most text one reply can carry: every line at its longest.
pub const MAX_REPLY_BYTES: usize = MAX_REPLY_LINE * MAX_REPLY_LINES;

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

impl Target {
    /// `host:port` with `security`, saying `helo_name` in EHLO; the
    /// certificate checked against the system's roots, the default timeouts,
    /// no egress guard (the operator's own relay) and no AUTH in clear. The
    /// start of a struct update for any other setting.
    pub fn new(
        host: SmtpHost,
        port: Port,
        security: Security,
        helo_name: impl Into<String>,
    ) -> Target {
        Target {
            host,
            port,
            security,
            tls: TlsSettings::default(),
            helo_name: helo_name.into(),
            timeouts: Timeouts::default(),
            egress: None,
            allow_plaintext_auth: false,
        }
    }
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

/// The negotiated TLS parameters of a session, named as Postfix and OpenSSL name them.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// For example `TLSv1.3`.
    pub version: String,
    /// The IANA name, for example `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// What decided one recipient of a [`Transaction`].
#[derive(Clone, Debug)]
pub struct RecipientOutcome {
    /// The step whose reply decided: MAIL when it was refused, RCPT when the
    /// recipient was refused (or not offered at all), else DATA.
    pub step: Step,
    /// The reply; for a recipient Herald did not offer to the server (`local`),
    /// a reply Herald made itself, saying why.
    pub reply: Reply,
    /// True when no command was sent for this recipient: the server could not
    /// take it (an internationalised address without SMTPUTF8), which retrying
    /// does not mend.
    pub local: bool,
}

/// The replies of one message's transaction: one for MAIL, one per recipient,
/// and the end of DATA.
#[derive(Clone, Debug)]
pub struct Transaction {
    /// The reply to MAIL FROM; when no transaction ran (no recipient could be
    /// offered), the first recipient's local refusal.
    pub mail: Reply,
    /// One reply per envelope recipient, in envelope order: its RCPT reply, the
    /// MAIL reply when MAIL was refused first, or its local refusal.
    pub rcpt: Vec<Reply>,
    /// The reply after the message content; `None` when no recipient was accepted.
    pub data: Option<Reply>,
    recipients: Vec<RecipientOutcome>,
}

impl Transaction {
    /// The reply that decides recipient `i`: MAIL's when it was refused,
    /// else the recipient's own when refused, else the end of DATA's.
    pub fn outcome_for(&self, i: usize) -> &Reply {
        self.recipients.get(i).map_or(&self.mail, |r| &r.reply)
    }

    /// What decided each recipient, in envelope order.
    pub fn recipients(&self) -> &[RecipientOutcome] {
        &self.recipients
    }
}

/// The replies of one SMTP transaction, for the recipients that were offered.
struct Replies {
    mail: Reply,
    rcpt: Vec<Reply>,
    data: Option<Reply>,
}

/// The longest a QUIT may take before the connection is closed anyway.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open, greeted (and, as configured, secured and authenticated) SMTP session.
///
/// Dropping it says QUIT in a task of its own when the connection is still
/// usable, so a server never logs a lost connection and no caller waits for it.
pub struct Connection {
    stream: Stream,
    buffer: Vec<u8>,
    extensions: BTreeSet<String>,
    auth_mechanisms: Vec<String>,
    /// The SIZE limit from EHLO, when the server advertised a nonzero one.
    size_limit: Option<u64>,
    remote: SocketAddr,
    tls: Option<TlsInfo>,
    timeouts: Timeouts,
    tracer: Option<Tracer>,
    /// False once the stream failed, timed out or was closed by the server:
    /// then there is nobody to say QUIT to.
    usable: bool,
}

impl Connection {
    /// Resolves, connects, reads the greeting, says EHLO, secures and authenticates.
    ///
    /// An error after the connection was made carries the remote address and,
    /// when TLS was up, its parameters; the session is ended with QUIT when
    /// the server is still listening.
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
            size_limit: None,
            remote,
            tls: None,
            timeouts: target.timeouts,
            tracer,
            usable: true,
        };
        match conn.start(target, credentials).await {
            Ok(()) => Ok(conn),
            // Dropping `conn` says QUIT if the server still listens.
            Err(error) => Err(error.within(conn.remote, conn.tls.as_ref())),
        }
    }

    /// Everything between the TCP connection and the first transaction.
    async fn start(
        &mut self,
        target: &Target,
        credentials: Option<&Credentials>,
    ) -> Result<(), SmtpError> {
        if target.security == Security::Tls {
            self.upgrade(target).await?;
        }
        self.expect(Step::Greeting).await.map_err(|e| {
            // A server that expects TLS from the first byte waits for a
            // ClientHello while the client waits for its greeting.
            if matches!(e.kind, ErrorKind::Timeout) && target.security != Security::Tls {
                let port = if target.port.get() == 465 {
                    " (port 465 is the implicit-TLS port)"
                } else {
                    ""
                };
                e.with_hint(format!(
                    "the server may expect implicit TLS (security: tls){port}"
                ))
            } else {
                e
            }
        })?;
        self.ehlo(&target.helo_name).await?;
        if target.security == Security::StartTls {
            if !self.extensions.contains("STARTTLS") {
                return Err(SmtpError::new(
                    Step::StartTls,
                    ErrorKind::StartTlsNotOffered,
                ));
            }
            self.command(Step::StartTls, b"STARTTLS\r\n").await?;
            // Anything the server sent after its 220 was sent in plaintext
            // before the handshake and must not be read as a reply (CVE-2011-0411).
            self.buffer.clear();
            self.upgrade(target).await?;
            self.ehlo(&target.helo_name).await?;
        }
        if let Some(credentials) = credentials {
            let starttls_offered = self.extensions.contains("STARTTLS");
            // A server that offers no AUTH at all is told first: whether a
            // password could travel in clear does not matter then, and the
            // failure says what to do.
            if self.auth_mechanisms.is_empty() {
                return Err(SmtpError::new(
                    Step::Auth,
                    ErrorKind::AuthNotOffered {
                        wanted: credentials.mechanism.as_str().to_ascii_uppercase(),
                        offered: String::new(),
                        starttls_offered,
                    },
                ));
            }
            if self.tls.is_none() {
                if !target.allow_plaintext_auth {
                    return Err(SmtpError::new(
                        Step::Auth,
                        ErrorKind::PlaintextAuthRefused { starttls_offered },
                    ));
                }
                self.note(
                    Step::Auth,
                    "warning: the session is not encrypted, so the password travels in clear (allowed by allow_plaintext_auth)",
                );
            }
            let offered = self.auth_mechanisms.join(" ");
            self.note(
                Step::Auth,
                format!(
                    "offered: {offered}; using {} as {}",
                    credentials.mechanism.as_str().to_ascii_uppercase(),
                    credentials.username
                ),
            );
            self.authenticate(credentials, starttls_offered).await?;
            tracing::debug!(mechanism = %credentials.mechanism, username = %credentials.username, "authenticated");
        }
        Ok(())
    }

    /// The address actually connected to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The TLS parameters, when the session is encrypted.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// `MAIL FROM`, declaring the size when the server advertises SIZE
    /// (RFC 1870), 8-bit content (RFC 6152) and SMTPUTF8 (RFC 6531) when
    /// asked to.
    fn mail_command(
        &self,
        from: &EmailAddress,
        size: Option<usize>,
        eight_bit: bool,
        utf8: bool,
    ) -> String {
        let mut cmd = format!("MAIL FROM:<{from}>");
        if let Some(size) = size.filter(|_| self.extensions.contains("SIZE")) {
            cmd.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit {
            cmd.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            cmd.push_str(" SMTPUTF8");
        }
        cmd.push_str("\r\n");
        cmd
    }

    /// Runs one message's transaction. `content` must come from [`crate::wire::dot_stuffed`].
    ///
    /// When the server offers PIPELINING, MAIL, every RCPT and DATA leave in
    /// one write and the body in another. A refused recipient does not stop the
    /// others; the connection stays usable for the next transaction.
    ///
    /// SMTPUTF8 is decided per recipient: a header section or a sender that
    /// is internationalised needs it for everyone (an error when the server
    /// lacks it), an internationalised recipient only for itself. Against a
    /// server without SMTPUTF8, such a recipient is not offered (its outcome
    /// is a local permanent refusal) and the others go without it.
    ///
    /// A message larger than the server's advertised SIZE is refused at once,
    /// before MAIL.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<Transaction, SmtpError> {
        self.send_inner(envelope, content)
            .await
            .map_err(|e| e.within(self.remote, self.tls.as_ref()))
    }

    async fn send_inner(
        &mut self,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<Transaction, SmtpError> {
        let size = crate::wire::declared_size(content);
        if let Some(limit) = self.size_limit {
            if size as u64 > limit {
                return Err(SmtpError::new(
                    Step::Mail,
                    ErrorKind::TooBig {
                        size: size as u64,
                        limit,
                    },
                ));
            }
        }
        // Only addresses put UTF-8 in a header section: mail-builder encodes names
        // and the subject as encoded words.
        let head_end = content
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(content.len());
        let header_utf8 = !content[..head_end].is_ascii();
        let everyone_needs_utf8 = header_utf8 || !envelope.from.is_ascii();
        let utf8_offered = self.extensions.contains("SMTPUTF8");
        if everyone_needs_utf8 && !utf8_offered {
            let needed_by = if header_utf8 {
                Utf8Need::Header
            } else {
                Utf8Need::Address
            };
            return Err(SmtpError::new(
                Step::Mail,
                ErrorKind::Utf8NotOffered { needed_by },
            ));
        }
        // Octets over 127 go only to a server that takes them, declared
        // (RFC 6152 §3); Herald does not convert a message to 7 bits.
        let eight_bit = header_utf8 || !content[head_end..].is_ascii();
        if eight_bit && !self.extensions.contains("8BITMIME") {
            return Err(SmtpError::new(Step::Mail, ErrorKind::EightBitNotOffered));
        }
        let offered: Vec<usize> = (0..envelope.to.len())
            .filter(|&i| utf8_offered || envelope.to[i].is_ascii())
            .collect();
        let utf8 = everyone_needs_utf8 || offered.iter().any(|&i| !envelope.to[i].is_ascii());
        let replies = if offered.is_empty() {
            None
        } else {
            let to: Vec<&EmailAddress> = offered.iter().map(|&i| &envelope.to[i]).collect();
            Some(
                self.transaction(&envelope.from, &to, size, eight_bit, utf8, content)
                    .await?,
            )
        };
        Ok(assemble(envelope, &offered, replies))
    }

    /// One SMTP transaction for the recipients `to`.
    async fn transaction(
        &mut self,
        from: &EmailAddress,
        to: &[&EmailAddress],
        size: usize,
        eight_bit: bool,
        utf8: bool,
        content: &[u8],
    ) -> Result<Replies, SmtpError> {
        let mail_cmd = self.mail_command(from, Some(size), eight_bit, utf8);
        let rcpt_cmds: Vec<String> = to.iter().map(|to| format!("RCPT TO:<{to}>\r\n")).collect();

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
            return Ok(Replies { mail, rcpt, data });
        }

        self.write(Step::Mail, mail_cmd.as_bytes()).await?;
        let mail = self.reply(Step::Mail).await?;
        if !mail.is_positive() {
            self.reset().await?;
            return Ok(Replies {
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
            return Ok(Replies {
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
        Ok(Replies {
            mail,
            rcpt,
            data: Some(data),
        })
    }

    /// Says QUIT, waits a little for the answer, and closes: for callers that
    /// have nothing else to do. [`Connection::close`] does the same without waiting.
    pub async fn quit(mut self) {
        if !self.usable {
            return;
        }
        let limit = QUIT_TIMEOUT.min(self.timeouts.command);
        if self
            .write_within(Step::Quit, b"QUIT\r\n", limit)
            .await
            .is_ok()
        {
            let _ = self.reply_within(Step::Quit, limit).await;
        }
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
        self.usable = false;
    }

    /// Says QUIT and closes in a task of its own, so no delivery waits for it.
    pub fn close(self) {
        drop(self);
    }

    /// Asks MAIL FROM and RCPT TO for each recipient, then resets: whether the
    /// server would take the envelope, without sending a message.
    pub async fn check_envelope(&mut self, envelope: &Envelope) -> Result<Vec<Reply>, SmtpError> {
        self.check_envelope_inner(envelope)
            .await
            .map_err(|e| e.within(self.remote, self.tls.as_ref()))
    }

    async fn check_envelope_inner(&mut self, envelope: &Envelope) -> Result<Vec<Reply>, SmtpError> {
        let utf8 = !envelope.from.is_ascii() || envelope.to.iter().any(|a| !a.is_ascii());
        if utf8 && !self.extensions.contains("SMTPUTF8") {
            return Err(SmtpError::new(
                Step::Mail,
                ErrorKind::Utf8NotOffered {
                    needed_by: Utf8Need::Address,
                },
            ));
        }
        let mut replies = Vec::with_capacity(envelope.to.len() + 1);
        let mail_cmd = self.mail_command(&envelope.from, None, false, utf8);
        self.write(Step::Mail, mail_cmd.as_bytes()).await?;
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
        self.command(Step::Rset, b"RSET\r\n").await.map(drop)
    }

    /// EHLO, or HELO when the server does not know EHLO (a 500 or 502,
    /// RFC 5321 §3.2): then no extension is known, so a session that needs
    /// one (STARTTLS, AUTH) fails on it rather than going without.
    async fn ehlo(&mut self, helo_name: &str) -> Result<(), SmtpError> {
        self.extensions.clear();
        self.auth_mechanisms.clear();
        self.size_limit = None;
        self.write(Step::Ehlo, format!("EHLO {helo_name}\r\n").as_bytes())
            .await?;
        let reply = self.reply(Step::Ehlo).await?;
        if matches!(reply.code, 500 | 502) {
            tracing::debug!(reply = %reply, "EHLO refused; saying HELO");
            self.command(Step::Ehlo, format!("HELO {helo_name}\r\n").as_bytes())
                .await?;
            return Ok(());
        }
        if !reply.is_positive() {
            return Err(SmtpError::new(Step::Ehlo, ErrorKind::Rejected(reply)));
        }
        tracing::debug!(reply = %reply, "EHLO answered");
        for line in reply.text.lines().skip(1) {
            let line = line.get(4..).unwrap_or_default().to_ascii_uppercase();
            let mut words = line.split_whitespace();
            if let Some(keyword) = words.next() {
                if keyword == "AUTH" {
                    self.auth_mechanisms.extend(words.map(str::to_owned));
                } else if keyword == "SIZE" {
                    // SIZE 0 (or none) means no fixed limit (RFC 1870).
                    self.size_limit = words
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n: &u64| n > 0);
                }
                self.extensions.insert(keyword.to_owned());
            }
        }
        Ok(())
    }

    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        starttls_offered: bool,
    ) -> Result<(), SmtpError> {
        let wanted = credentials.mechanism.as_str().to_ascii_uppercase();
        if !self.auth_mechanisms.contains(&wanted) {
            let offered = self.auth_mechanisms.join(" ");
            return Err(SmtpError::new(
                Step::Auth,
                ErrorKind::AuthNotOffered {
                    wanted,
                    offered,
                    starttls_offered,
                },
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
        let (connector, presented) = target.tls.connector().map_err(tls_error)?;
        let name = target
            .tls
            .server_name(target.host.as_ref())
            .map_err(tls_error)?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(tls_error("the session is already encrypted".into()));
        };
        // From here on the plaintext stream is gone: a failed handshake leaves
        // nothing to say QUIT on.
        self.usable = false;
        let handshake = tokio::time::timeout(
            target.timeouts.connect,
            connector.connect(name, Acking(tcp)),
        );
        let tls = match handshake.await {
            Err(_) => return Err(SmtpError::new(Step::Tls, ErrorKind::Timeout)),
            Ok(Err(e)) => {
                let presented = presented.lock().expect("certificate lock").take();
                let shown_name = target
                    .tls
                    .server_name
                    .as_deref()
                    .unwrap_or(target.host.as_ref());
                let hint = crate::tls::hint(
                    &e,
                    presented.as_ref(),
                    shown_name,
                    target.security == Security::Tls,
                );
                let error = tls_error(e.to_string());
                return Err(match hint {
                    Some(hint) => error.with_hint(hint),
                    None => error,
                });
            }
            Ok(Ok(tls)) => tls,
        };
        self.usable = true;
        let (_, session) = tls.get_ref();
        self.tls = Some(TlsInfo {
            version: session
                .protocol_version()
                .map(crate::tls::version_name)
                .unwrap_or_default(),
            cipher: session
                .negotiated_cipher_suite()
                .map(|c| crate::tls::cipher_name(c.suite()))
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
        self.write_within(step, bytes, self.timeouts.command).await
    }

    async fn write_within(
        &mut self,
        step: Step,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<(), SmtpError> {
        let io = |e| SmtpError::new(step, ErrorKind::Io(e));
        // Unusable while the write is under way: a caller that gives up on it
        // halfway must not have QUIT appended to half a command.
        self.usable = false;
        let written = match tokio::time::timeout(limit, async {
            self.stream.write_all(bytes).await.map_err(io)?;
            self.stream.flush().await.map_err(io)
        })
        .await
        {
            Ok(written) => written,
            Err(_) => Err(SmtpError::new(step, ErrorKind::Timeout)),
        };
        self.usable = written.is_ok();
        written
    }

    async fn reply(&mut self, step: Step) -> Result<Reply, SmtpError> {
        self.reply_within(step, self.timeouts.command).await
    }

    /// Reads a reply and records it in the trace, marked ok only when it is
    /// the positive answer to its command.
    async fn reply_within(&mut self, step: Step, limit: Duration) -> Result<Reply, SmtpError> {
        // Unusable until the reply is complete, for the same reason as in
        // `write_within`: a reply half read leaves the session out of step.
        self.usable = false;
        let reply = match tokio::time::timeout(limit, self.read_reply(step)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SmtpError::new(step, ErrorKind::Timeout)),
        };
        let reply = match reply {
            Ok(reply) => reply,
            // A timed-out, broken or closed stream cannot carry a QUIT.
            Err(error) => return Err(error),
        };
        // After 421 the server closes the connection (RFC 5321 3.8).
        self.usable = reply.code != 421;
        if let Some(tracer) = &self.tracer {
            tracer.note(step, is_expected(step, &reply), reply.text.clone());
        }
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

impl Drop for Connection {
    fn drop(&mut self) {
        if !std::mem::replace(&mut self.usable, false) {
            return;
        }
        // Outside a runtime there is nothing to run the QUIT on; the socket
        // is closed without it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stream = std::mem::replace(&mut self.stream, Stream::Closed);
        let limit = QUIT_TIMEOUT.min(self.timeouts.command);
        runtime.spawn(say_quit(stream, limit));
    }
}

/// Says QUIT, reads the answer's first line and closes, all within `limit`;
/// what the server answers changes nothing.
async fn say_quit(mut stream: Stream, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        stream.write_all(b"QUIT\r\n").await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 512];
        while !answer.contains(&b'\n') && answer.len() < MAX_REPLY_LINE {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        stream.shutdown().await
    })
    .await;
}

/// True when `reply` is the positive answer at `step`: 334 during AUTH, 354
/// to DATA, 2xx otherwise.
fn is_expected(step: Step, reply: &Reply) -> bool {
    reply.is_positive()
        || (step == Step::Auth && reply.code == 334)
        || (step == Step::Data && reply.code == 354)
}

/// The reply Herald records for a recipient it did not offer to the server.
fn not_offered(address: &EmailAddress) -> Reply {
    Reply {
        code: 553,
        enhanced_code: Some("5.6.7".into()),
        text: format!(
            "553 5.6.7 not offered to the server: it does not offer SMTPUTF8, which the internationalised address {address} needs"
        ),
    }
}

/// One outcome per envelope recipient from the transaction of the `offered` ones.
fn assemble(envelope: &Envelope, offered: &[usize], replies: Option<Replies>) -> Transaction {
    let mut recipients = Vec::with_capacity(envelope.to.len());
    for (i, address) in envelope.to.iter().enumerate() {
        let outcome = match (offered.iter().position(|&o| o == i), &replies) {
            (Some(_), Some(r)) if !r.mail.is_positive() => RecipientOutcome {
                step: Step::Mail,
                reply: r.mail.clone(),
                local: false,
            },
            (Some(j), Some(r)) => match (r.rcpt.get(j), &r.data) {
                (Some(rcpt), _) if !rcpt.is_positive() => RecipientOutcome {
                    step: Step::Rcpt,
                    reply: rcpt.clone(),
                    local: false,
                },
                (_, Some(data)) => RecipientOutcome {
                    step: Step::Data,
                    reply: data.clone(),
                    local: false,
                },
                (rcpt, None) => RecipientOutcome {
                    step: Step::Rcpt,
                    reply: rcpt.unwrap_or(&r.mail).clone(),
                    local: false,
                },
            },
            _ => RecipientOutcome {
                step: Step::Rcpt,
                reply: not_offered(address),
                local: true,
            },
        };
        recipients.push(outcome);
    }
    let (mail, data) = match replies {
        Some(r) => (r.mail, r.data),
        None => (
            recipients
                .first()
                .map(|r| r.reply.clone())
                .unwrap_or_else(|| not_offered(&envelope.from)),
            None,
        ),
    };
    // Each recipient's own reply, or the one that decided it before RCPT.
    let rcpt = recipients.iter().map(|r| r.reply.clone()).collect();
    Transaction {
        mail,
        rcpt,
        data,
        recipients,
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
    let Some(egress) = &target.egress else {
        return Ok(addrs);
    };
    let first_refusal = addrs.iter().find_map(|a| egress.refusal(a.ip()));
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| egress.permits(a.ip()))
        .collect();
    match first_refusal {
        Some(rule) if addrs.is_empty() => {
            Err(SmtpError::new(Step::Connect, ErrorKind::EgressDenied(rule)))
        }
        _ => Ok(addrs),
    }
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
