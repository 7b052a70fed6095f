//! Herald's SMTP client: connection, TLS, authentication and pipelined transactions
//! with a reply for every recipient.
//!
//! It is written for throughput and honesty: `TCP_NODELAY`, one write for a
//! whole pipelined envelope and one for a whole message body, and every reply
//! kept with the server's own words so the tenant can read them.

mod client;
mod egress;
mod error;
mod reply;
mod stream;
mod tls;
mod trace;
pub mod wire;

pub use client::{
    Connection, Credentials, Envelope, MAX_REPLY_BYTES, RecipientOutcome, Target, Timeouts,
    TlsInfo, Transaction, resolve,
};
pub use egress::{Egress, EgressRule};
pub use error::{ErrorKind, SmtpError, Step, Utf8Need};
pub use reply::Reply;
pub use tls::{TlsSettings, https_client_config, validate_ca_pem};
pub use trace::{TraceStep, Tracer};
