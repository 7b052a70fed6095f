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
    /// RSET, which ends a transaction that did not deliver.
    Rset,
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
            Step::Rset => "rset",
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
        /// The mechanisms the server offered in EHLO, space-separated;
        /// empty when it offers no AUTH at all.
        offered: String,
        /// Whether the server offered STARTTLS: many offer AUTH only after it.
        starttls_offered: bool,
    },
    /// The session is not encrypted (`security: none`) and the server entry
    /// does not allow AUTH in clear, so the password was not sent.
    PlaintextAuthRefused {
        /// Whether the server offered STARTTLS, which would protect the password.
        starttls_offered: bool,
    },
    /// The message is larger than the server's advertised SIZE limit (RFC 1870);
    /// nothing was sent.
    TooBig {
        /// The message's size in octets, as declared in `SIZE=`.
        size: u64,
        /// The server's limit from its EHLO reply.
        limit: u64,
    },
    /// The egress policy forbids every address of the host, by this rule (the
    /// first address's); nothing was connected to.
    EgressDenied(crate::EgressRule),
    /// The server broke the protocol (a malformed or oversized reply).
    Protocol(String),
    /// The message needs SMTPUTF8 (see [`Utf8Need`]) and the server does
    /// not offer it, so it cannot be given the message at all.
    Utf8NotOffered {
        /// What needs it.
        needed_by: Utf8Need,
    },
    /// The message holds octets over 127 and the server does not offer
    /// 8BITMIME; Herald does not convert a message to 7 bits.
    EightBitNotOffered,
}

/// What makes a message need SMTPUTF8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Utf8Need {
    /// An internationalised address of the envelope.
    Address,
    /// UTF-8 in the header section that is not in encoded words (a message
    /// taken over SMTP as its client wrote it).
    Header,
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
    /// What is likely wrong and how to mend it, when the failure is a
    /// recognised one (a TLS mode that does not match the port, an untrusted
    /// certificate); shown after the error.
    pub hint: Option<String>,
}

impl SmtpError {
    pub(crate) fn new(step: Step, kind: ErrorKind) -> Self {
        SmtpError {
            step,
            kind,
            remote: None,
            tls: None,
            hint: None,
        }
    }

    /// The error with a hint at its likely cause.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error with what was known of the session when it happened.
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
        matches!(
            self.kind,
            ErrorKind::Utf8NotOffered { .. }
                | ErrorKind::EightBitNotOffered
                | ErrorKind::TooBig { .. }
        ) || (matches!(self.step, Step::Mail | Step::Rcpt | Step::Data)
            && self.reply().is_some_and(Reply::is_permanent))
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_kind(f)?;
        match &self.hint {
            Some(hint) => write!(f, "; {hint}"),
            None => Ok(()),
        }
    }
}

impl SmtpError {
    fn fmt_kind(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.step;
        match &self.kind {
            ErrorKind::Dns(e) => write!(f, "{step}: name resolution failed: {e}"),
            ErrorKind::Io(e) => write!(f, "{step}: {e}"),
            ErrorKind::Timeout => write!(f, "{step}: the server did not answer in time"),
            ErrorKind::Tls(e) => write!(f, "{step}: TLS failed: {e}"),
            ErrorKind::Rejected(reply) => write!(f, "{step}: the server answered {reply}"),
            ErrorKind::Utf8NotOffered {
                needed_by: Utf8Need::Address,
            } => write!(
                f,
                "{step}: the server does not offer SMTPUTF8, which an internationalised address of this message needs"
            ),
            ErrorKind::Utf8NotOffered {
                needed_by: Utf8Need::Header,
            } => write!(
                f,
                "{step}: the server does not offer SMTPUTF8, which this message's header section needs (it holds UTF-8 as its client wrote it, not encoded)"
            ),
            ErrorKind::EightBitNotOffered => write!(
                f,
                "{step}: the server does not offer 8BITMIME, which this message's 8-bit content needs; Herald does not convert it to 7 bits"
            ),
            ErrorKind::StartTlsNotOffered => write!(
                f,
                "{step}: the server does not offer STARTTLS and the server entry requires it; nothing was sent in plaintext"
            ),
            ErrorKind::AuthNotOffered {
                wanted,
                offered,
                starttls_offered,
            } => {
                if offered.is_empty() {
                    write!(
                        f,
                        "{step}: the server offers no authentication at all (no AUTH in its EHLO reply), so {wanted} could not be used; if it accepts mail without it, turn off \"requires authentication\" (requires_auth) on the server entry and name no account on the provider, else use the port or security mode where the server offers AUTH"
                    )?;
                } else {
                    write!(
                        f,
                        "{step}: the server does not offer AUTH {wanted} (it offers: {offered})"
                    )?;
                }
                if *starttls_offered {
                    f.write_str(
                        "; it offers STARTTLS, and many servers offer AUTH only after it: use security: starttls",
                    )?;
                }
                Ok(())
            }
            ErrorKind::PlaintextAuthRefused { starttls_offered } => {
                write!(
                    f,
                    "{step}: the session is not encrypted (security: none), so the password would travel unencrypted; AUTH was not sent (set allow_plaintext_auth: true on the server entry to allow it)"
                )?;
                if *starttls_offered {
                    f.write_str("; the server offers STARTTLS: use security: starttls")?;
                }
                Ok(())
            }
            ErrorKind::TooBig { size, limit } => write!(
                f,
                "{step}: the message is {size} bytes and the server accepts at most {limit} (its SIZE limit); nothing was sent"
            ),
            ErrorKind::EgressDenied(rule) => write!(
                f,
                "{step}: the destination is not allowed by this installation's egress policy: {rule}"
            ),
            ErrorKind::Protocol(e) => write!(f, "{step}: protocol error: {e}"),
        }
    }
}

impl std::error::Error for SmtpError {}
