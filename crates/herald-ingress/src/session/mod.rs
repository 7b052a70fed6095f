//! One SMTP session: reads commands (pipelined or not), answers each with an
//! enhanced status code, upgrades to TLS, authenticates, and hands each
//! accepted message to the backend before answering `250`.
//!
//! Replies are collected and written when no complete command is waiting in
//! the input, so a pipelined group (RFC 2920) gets its replies in one write,
//! in order. Commands are parsed by `smtp-proto`; the session frames the
//! lines itself so that the RFC 5321 limit of 1,000 octets holds. A command
//! line ending in a bare LF is taken (as most servers take hand-typed
//! sessions): smuggling is about where DATA ends, and there only CRLF counts.
//!
//! `authentication` holds AUTH, `transaction` MAIL, RCPT and DATA.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::EmailAddress;
use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::Instrument;

use crate::listener::{Shared, stopped};
use crate::reply::Reply;
use crate::{Client, Refusal, canonical};

mod authentication;
mod transaction;

/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const MAX_COMMAND_LINE: usize = 1000;
/// Failed commands after which a session is closed.
const MAX_ERRORS: u32 = 20;
/// How much is read from the socket at a time, at most.
const READ_CHUNK: usize = 64 * 1024;

/// The connection, plain or under TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while the plain stream is handed to the TLS handshake.
    Gone,
}

impl Conn {
    async fn read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        buf.reserve(READ_CHUNK);
        match self {
            Conn::Plain(s) => s.read_buf(buf).await,
            Conn::Tls(s) => s.read_buf(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Gone => Ok(()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
    }
}

/// What reading the next line gave.
enum Input {
    Line(Vec<u8>),
    /// A line over the limit, read and thrown away up to its LF.
    TooLong,
    /// The client closed, the socket failed, or a reply could not be written.
    Closed,
    TimedOut,
    /// The listener is stopping and the session was waiting for a command.
    Stopping,
}

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// The client's EHLO or HELO.
struct Helo {
    name: String,
    esmtp: bool,
}

/// A mail transaction, from MAIL to the end of DATA (or RSET).
struct Transaction {
    id: String,
    client: Client,
    reverse_path: String,
    smtputf8: bool,
    recipients: Vec<EmailAddress>,
    /// Some RCPT was given, accepted or not: DATA then says "no valid
    /// recipients" rather than "need RCPT".
    rcpt_given: bool,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    input: Vec<u8>,
    /// Where the unread part of `input` starts.
    pos: usize,
    output: Vec<u8>,
    helo: Option<Helo>,
    /// The connector that covers the client's address, asked once at the start.
    connector: Result<Option<Client>, Refusal>,
    /// The credential the client authenticated with, and its user name for logs.
    authenticated: Option<(Client, String)>,
    /// TLS version and cipher suite, once under TLS.
    tls: Option<(String, String)>,
    transaction: Option<Transaction>,
    errors: u32,
}

impl Session {
    /// Runs a session to its end.
    pub async fn run(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        implicit_tls: bool,
        stop: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!("smtp", %peer);
        async move {
            let connector = shared.backend.connector(canonical(peer.ip())).await;
            if let Err(refusal) = &connector {
                tracing::warn!(
                    ?refusal,
                    "could not look up the connector for the client's address"
                );
            }
            let mut session = Session {
                shared,
                conn: Conn::Plain(stream),
                peer,
                stop,
                input: Vec::new(),
                pos: 0,
                output: Vec::new(),
                helo: None,
                connector,
                authenticated: None,
                tls: None,
                transaction: None,
                errors: 0,
            };
            if implicit_tls && !session.handshake().await {
                return;
            }
            tracing::debug!(tls = implicit_tls, "SMTP session opened");
            session.shared.metrics.smtp_session();
            session.reply(Reply::bare(
                220,
                format!("{} ESMTP Herald", session.shared.settings.hostname),
            ));
            session.serve().await;
            let _ = session.flush().await;
            session.conn.shutdown().await;
            tracing::debug!("SMTP session closed");
        }
        .instrument(span)
        .await;
    }

    async fn serve(&mut self) {
        loop {
            let line = match self.next_line(self.shared.settings.command_timeout).await {
                Input::Line(line) => line,
                Input::TooLong => {
                    self.error(Reply::new(500, "5.5.2", "Line too long"));
                    if self.errors >= MAX_ERRORS {
                        return self.too_many_errors();
                    }
                    continue;
                }
                Input::Closed => return,
                Input::TimedOut => {
                    let host = self.shared.settings.hostname.clone();
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        format!("{host} Timeout, closing connection"),
                    ));
                    return;
                }
                Input::Stopping => {
                    let host = self.shared.settings.hostname.clone();
                    self.reply(Reply::new(
                        421,
                        "4.3.2",
                        format!("{host} Service shutting down, try again later"),
                    ));
                    return;
                }
            };
            match self.command(&line).await {
                Flow::Continue if self.errors >= MAX_ERRORS => return self.too_many_errors(),
                Flow::Continue => {}
                Flow::Close => return,
            }
        }
    }

    fn too_many_errors(&mut self) {
        self.reply(Reply::new(
            421,
            "4.7.0",
            "Too many errors, closing connection",
        ));
    }

    fn reply(&mut self, reply: Reply) {
        self.shared.metrics.smtp_reply(reply.code);
        reply.write_to(&mut self.output);
    }

    /// A reply to a command that was wrong; enough of them close the session.
    fn error(&mut self, reply: Reply) {
        self.errors += 1;
        self.reply(reply);
    }

    async fn flush(&mut self) -> bool {
        if self.output.is_empty() {
            return true;
        }
        let output = std::mem::take(&mut self.output);
        let timeout = self.shared.settings.write_timeout;
        matches!(
            tokio::time::timeout(timeout, self.conn.write(&output)).await,
            Ok(Ok(()))
        )
    }

    /// Reads more input after writing the replies waiting; `Err` ends the session.
    async fn fill(&mut self, timeout: Duration, stoppable: bool) -> Result<(), Input> {
        if !self.flush().await {
            return Err(Input::Closed);
        }
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let mut stop = self.stop.clone();
        let read = async {
            tokio::select! {
                read = tokio::time::timeout(timeout, self.conn.read(&mut self.input)) => Some(read),
                _ = stopped(&mut stop), if stoppable => None,
            }
        };
        match read.await {
            None => Err(Input::Stopping),
            Some(Err(_)) => Err(Input::TimedOut),
            Some(Ok(Ok(0))) | Some(Ok(Err(_))) => Err(Input::Closed),
            Some(Ok(Ok(_))) => Ok(()),
        }
    }

    /// The next line (command or AUTH response), LF included.
    async fn next_line(&mut self, timeout: Duration) -> Input {
        let mut too_long = false;
        loop {
            let waiting = &self.input[self.pos..];
            if let Some(end) = waiting.iter().position(|&b| b == b'\n') {
                let line = waiting[..=end].to_vec();
                self.pos += end + 1;
                if too_long || line.len() > MAX_COMMAND_LINE {
                    return Input::TooLong;
                }
                return Input::Line(line);
            }
            if waiting.len() >= MAX_COMMAND_LINE {
                // The line is over the limit already: what comes before its
                // LF is thrown away, never read as commands.
                too_long = true;
                self.pos = self.input.len();
            }
            if let Err(end) = self.fill(timeout, true).await {
                return end;
            }
        }
    }

    /// Whether AUTH is offered: under TLS, or to a loopback client when the settings allow.
    fn auth_allowed(&self) -> bool {
        self.tls.is_some()
            || (self.shared.settings.loopback_is_local && canonical(self.peer.ip()).is_loopback())
    }

    fn starttls_offered(&self) -> bool {
        self.shared.tls.is_some() && self.tls.is_none()
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let request = Request::parse(&mut line.iter());
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                let is_rcpt = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"RCPT");
                if let (true, Some(transaction)) = (is_rcpt, self.transaction.as_mut()) {
                    transaction.rcpt_given = true;
                }
                self.error(match error {
                    ParseError::UnknownCommand => {
                        Reply::new(500, "5.5.2", "Syntax error, command unrecognized")
                    }
                    ParseError::InvalidSenderAddress => {
                        Reply::new(553, "5.1.7", "The sender address is invalid")
                    }
                    ParseError::InvalidRecipientAddress => {
                        Reply::new(553, "5.1.3", "The recipient address is invalid")
                    }
                    ParseError::SyntaxError { syntax } => {
                        Reply::new(501, "5.5.4", format!("Syntax: {syntax}"))
                    }
                    ParseError::InvalidParameter { param } => Reply::new(
                        501,
                        "5.5.4",
                        format!("Invalid value of the parameter {param}"),
                    ),
                    ParseError::UnsupportedParameter { param } => Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported parameter {}", param.escape_debug()),
                    ),
                    ParseError::ResponseTooLong => Reply::new(500, "5.5.2", "Line too long"),
                    _ => Reply::new(500, "5.5.2", "Syntax error"),
                });
                return Flow::Continue;
            }
        };
        if let Some(refusal) = parameters_refused(&request, line) {
            self.error(refusal);
            return Flow::Continue;
        }
        match request {
            Request::Ehlo { host } => self.ehlo(host.into_owned(), true),
            Request::Helo { host } => self.ehlo(host.into_owned(), false),
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response.into_owned()).await,
            Request::Mail { from } => self.mail(from.into_owned()),
            Request::Rcpt { to } => self.rcpt(to.into_owned()),
            Request::Data => return self.data().await,
            Request::Bdat { .. } => {
                // The chunk that follows BDAT could not be told from
                // commands, so the session ends here.
                self.reply(Reply::new(
                    502,
                    "5.5.1",
                    "BDAT is not supported, closing connection",
                ));
                return Flow::Close;
            }
            Request::Rset => {
                self.transaction = None;
                self.reply(Reply::new(250, "2.0.0", "Ok"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "Ok")),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Flow::Close;
            }
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
            )),
            Request::Expn { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1", "Command not implemented"));
            }
        }
        Flow::Continue
    }

    fn ehlo(&mut self, name: String, esmtp: bool) {
        self.transaction = None;
        let settings = &self.shared.settings;
        let reply = if esmtp {
            let mut lines = vec![
                format!(
                    "{} Hello [{}]",
                    settings.hostname,
                    canonical(self.peer.ip())
                ),
                "PIPELINING".to_owned(),
                format!("SIZE {}", settings.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
            ];
            if self.starttls_offered() {
                lines.push("STARTTLS".to_owned());
            }
            if self.auth_allowed() && self.authenticated.is_none() {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
            Reply {
                code: 250,
                enhanced: None,
                lines,
            }
        } else {
            Reply::bare(250, settings.hostname.clone())
        };
        self.helo = Some(Helo { name, esmtp });
        self.reply(reply);
    }

    async fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            self.error(Reply::new(503, "5.5.1", "Already under TLS"));
            return Flow::Continue;
        }
        if self.shared.tls.is_none() {
            self.error(Reply::new(502, "5.5.1", "STARTTLS is not offered"));
            return Flow::Continue;
        }
        if self.pos < self.input.len() {
            // Bytes sent after STARTTLS before the handshake (CVE-2011-0411):
            // a client that does this is broken or an attacker injecting
            // commands into the coming TLS session. They are never executed,
            // and rather than guess which of the client's bytes to trust,
            // the session ends.
            tracing::info!("commands pipelined after STARTTLS; closing the session");
            self.reply(Reply::new(
                554,
                "5.5.1",
                "Commands were pipelined after STARTTLS, closing connection",
            ));
            return Flow::Close;
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        if !self.flush().await {
            return Flow::Close;
        }
        if !self.handshake().await {
            return Flow::Close;
        }
        // RFC 3207 §4.2: what was learnt before TLS is forgotten. The
        // connector stays: it follows from the address, not from the client's words.
        self.helo = None;
        self.authenticated = None;
        self.transaction = None;
        Flow::Continue
    }

    /// The TLS handshake on the plain connection; false when it failed.
    async fn handshake(&mut self) -> bool {
        let Some(acceptor) = self.shared.tls.clone() else {
            return false;
        };
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            return false;
        };
        self.input.clear();
        self.pos = 0;
        match tokio::time::timeout(self.shared.settings.write_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(stream)) => {
                self.tls = crate::tls::parameters(stream.get_ref().1);
                if self.tls.is_none() {
                    self.tls = Some(("TLS".into(), "unknown".into()));
                }
                self.conn = Conn::Tls(Box::new(stream));
                true
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                false
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                false
            }
        }
    }
}

/// What the parser lets through but the RFCs do not: a command that takes
/// no parameters given some (STARTTLS must answer 501, RFC 3207 §4; DATA,
/// RSET and QUIT take none, RFC 5321 §4.1.1), and a `SIZE=` of more than
/// the 20 digits RFC 1870 allows, which the parser would wrap to a small
/// number.
fn parameters_refused(request: &Request<Cow<'_, str>>, line: &[u8]) -> Option<Reply> {
    let words = line.trim_ascii();
    match request {
        Request::StartTls | Request::Data | Request::Rset | Request::Quit => {
            let gap = words.iter().position(u8::is_ascii_whitespace)?;
            let command = String::from_utf8_lossy(&words[..gap]).to_ascii_uppercase();
            Some(Reply::new(
                501,
                "5.5.4",
                format!("Syntax error: {command} takes no parameters"),
            ))
        }
        Request::Mail { .. } => {
            let after_path = &words[words.iter().rposition(|&b| b == b'>')? + 1..];
            let at = after_path
                .windows(5)
                .position(|w| w.eq_ignore_ascii_case(b"SIZE="))?;
            let digits = after_path[at + 5..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            (digits > 20).then(|| Reply::new(501, "5.5.4", "Invalid value of the parameter SIZE"))
        }
        _ => None,
    }
}
