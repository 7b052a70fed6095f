//! What went wrong in an SMTP session, at which step, and whether retrying can help.

use std::fmt;
use std::net::SocketAddr;

use crate::{Reply, TlsInfo};

/// The step of a session at which an error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Resolving the server's name.
    Dns,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake (implicit TLS or after STARTTLS).
    Tls,
    /// The server's greeting.
    Greeting,
    /// EHLO (or HELO).
    Ehlo,
    /// The STARTTLS command.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command and the message content.
    Data,
    /// QUIT, at the end of a session.
    Quit,
}

impl Step {
    /// The step's name as shown on attempts.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Greeting => "greeting",
            Step::Ehlo => "ehlo",
            Step::StartTls => "starttls",
            Step::Auth => "auth",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
            Step::Quit => "quit",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of failure.
#[derive(Debug)]
pub enum ErrorKind {
    /// The name did not resolve, or resolved to nothing usable.
    Dns(String),
    /// A socket error: refused, reset, closed by the peer.
    Io(std::io::Error),
    /// The server did not answer within the step's timeout.
    Timeout,
    /// The TLS handshake failed, e.g. the certificate was not trusted.
    Tls(String),
    /// The server answered with a failure code where the session cannot go on.
    Rejected(Reply),
    /// The server did not offer STARTTLS, and the server entry requires it.
    StartTlsNotOffered,
    /// The server offers no authentication mechanism the account can use.
    AuthNotOffered {
        /// What the account needs.
        wanted: String,
        /// What the server offered in EHLO.
        offered: String,
    },
    /// The egress policy forbids every address of the host. The error is the
    /// same whatever the reason, and nothing was connected to.
    EgressDenied,
    /// The server broke the protocol (a malformed or oversized reply).
    Protocol(String),
    /// An address of the envelope is internationalised and the server does not
    /// offer SMTPUTF8, so it cannot be given the message at all.
    Utf8NotOffered,
}

/// An error of an SMTP session, with the step where it happened.
#[derive(Debug)]
pub struct SmtpError {
    /// Where the session stopped.
    pub step: Step,
    /// What happened.
    pub kind: ErrorKind,
    /// The address connected to, when the session got that far.
    pub remote: Option<SocketAddr>,
    /// The TLS parameters, when the session was encrypted before it failed.
    pub tls: Option<TlsInfo>,
}

impl SmtpError {
    pub(crate) fn new(step: Step, kind: ErrorKind) -> Self {
        SmtpError {
            step,
            kind,
            remote: None,
            tls: None,
        }
    }

    /// The error with what was known of the session when it happened.
    #[allow(dead_code)] // the client fills it in where a session fails
    pub(crate) fn within(mut self, remote: SocketAddr, tls: Option<&TlsInfo>) -> Self {
        self.remote.get_or_insert(remote);
        if self.tls.is_none() {
            self.tls = tls.cloned();
        }
        self
    }

    /// The server's reply, when the failure was one.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.kind {
            ErrorKind::Rejected(reply) => Some(reply),
            _ => None,
        }
    }

    /// True when the message must not be retried: a 5xx answer to the transaction itself.
    ///
    /// Everything else defers: network and TLS failures, timeouts, and even a
    /// refused login, which an administrator fixes in the settings; the maximum
    /// age ends the retries of what never recovers.
    pub fn is_permanent(&self) -> bool {
        matches!(self.kind, ErrorKind::Utf8NotOffered)
            || (matches!(self.step, Step::Mail | Step::Rcpt | Step::Data)
                && self.reply().is_some_and(Reply::is_permanent))
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.step;
        match &self.kind {
            ErrorKind::Dns(e) => write!(f, "{step}: name resolution failed: {e}"),
            ErrorKind::Io(e) => write!(f, "{step}: {e}"),
            ErrorKind::Timeout => write!(f, "{step}: the server did not answer in time"),
            ErrorKind::Tls(e) => write!(f, "{step}: TLS failed: {e}"),
            ErrorKind::Rejected(reply) => write!(f, "{step}: the server answered {reply}"),
            ErrorKind::Utf8NotOffered => write!(
                f,
                "{step}: the server does not offer SMTPUTF8, which an internationalised address of this message needs"
            ),
            ErrorKind::StartTlsNotOffered => write!(
                f,
                "{step}: the server does not offer STARTTLS and the server entry requires it; nothing was sent in plaintext"
            ),
            ErrorKind::AuthNotOffered { wanted, offered } => write!(
                f,
                "{step}: the server does not offer AUTH {wanted} (it offers: {offered})"
            ),
            ErrorKind::EgressDenied => write!(
                f,
                "{step}: the destination is not allowed by this installation's egress policy"
            ),
            ErrorKind::Protocol(e) => write!(f, "{step}: protocol error: {e}"),
        }
    }
}

impl std::error::Error for SmtpError {}
