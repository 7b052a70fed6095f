//! Herald's SMTP submission listener: the protocol engine through which
//! applications hand mail to Herald, and the seam (`Backend`) through which it
//! hands each received message to the store.
//!
//! The crate knows nothing of tenants' storage: it asks the [`Backend`] who a
//! client is (`login`, `connector`) and gives it each message (`accept`), and
//! answers `250` only after `accept` returned, which is after the commit.

mod auth;
mod data;
mod limits;
mod listener;
mod received;
mod reply;
mod session;
mod settings;
mod store;
mod tls;

pub use listener::{Listener, StartError};
pub use settings::Settings;
pub use store::StoreBackend;

/// Who is submitting: a tenant's SMTP credential (after AUTH) or an IP
/// connector (by client address).
#[derive(Clone, Debug)]
pub struct Client {
    /// The tenant the mail is submitted to.
    pub tenant_id: herald_core::TenantId,
    /// The credential or connector that let the client in.
    pub by: Sender,
    /// Messages per minute this credential or connector may submit; `None` is unlimited.
    pub rate_limit_per_minute: Option<u32>,
}

/// What let a client in, by its id; also the key of the rate limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// An SMTP credential (username and password), by id.
    Credential(String),
    /// An IP connector (CIDR ranges that need no AUTH), by id.
    Connector(String),
}

/// A received message, as the session hands it over.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// As given in MAIL FROM, `""` for `<>`.
    pub reverse_path: String,
    /// The accepted recipients, each once, in the order given.
    pub recipients: Vec<herald_core::EmailAddress>,
    /// The message as received: CRLF line endings, dot-unstuffed, with the
    /// session's `Received:` header prepended.
    pub data: Vec<u8>,
    /// MAIL FROM carried `SMTPUTF8`.
    pub smtputf8: bool,
}

/// An SMTP answer the backend chose, e.g. `451 4.3.0` for a store failure or
/// `452 4.3.1` for a full queue. The session sends it as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The reply code, 4xx or 5xx.
    pub code: u16,
    /// The enhanced status code (RFC 3463), e.g. `4.3.0`.
    pub enhanced: String,
    /// The text after the codes, one line.
    pub text: String,
}

impl Refusal {
    /// A refusal with this code, enhanced code and text.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            enhanced: enhanced.to_owned(),
            text: text.into(),
        }
    }

    /// `451 4.3.0`: the message could not be stored now; the client retries.
    pub fn store_unavailable() -> Refusal {
        Refusal::new(451, "4.3.0", "Temporary failure, please try again later")
    }
}

/// What the listener needs from the rest of Herald.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The client for this username and password, `None` when they do not
    /// match (a constant-time compare is the backend's job). An `Err` is sent
    /// as the AUTH reply; `454 4.7.0` is the right one for a store failure.
    async fn login(&self, username: &str, password: &str) -> Result<Option<Client>, Refusal>;
    /// The connector whose CIDRs cover this address, if any. Asked once per
    /// session, at its start; an `Err` is answered at MAIL to a client that
    /// did not authenticate (a temporary code keeps its mail queued).
    async fn connector(&self, ip: std::net::IpAddr) -> Result<Option<Client>, Refusal>;
    /// Stores one message durably and returns only after the commit:
    /// `Ok(message id)` for the `250` reply, or the refusal to send instead.
    async fn accept(&self, client: &Client, envelope: Envelope) -> Result<String, Refusal>;
}

/// The address as plain IPv4 when it is an IPv4-mapped IPv6 one (a
/// dual-stack socket's view of an IPv4 client), so that limits and
/// connectors see one address per client.
pub(crate) fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
