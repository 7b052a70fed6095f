//! Herald's REST API: thin axum handlers that turn JSON into domain values,
//! check the caller's role and tenant, and call the store.

mod auth;
mod body;
mod error;
pub mod password;
mod routes;
pub mod service;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use herald_core::Sealer;
use herald_delivery::{DefaultProvider, ProviderCache};
use herald_store::Store;
use tokio::sync::Notify;

pub use auth::Caller;
pub use error::ApiError;

/// The largest request body accepted; message content has its own, smaller limits.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Limits on what a submitter may send; over one is a 422 (or 413) naming it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Text and HTML together, in bytes.
    pub max_message_bytes: usize,
    /// To, cc and bcc together.
    pub max_recipients: usize,
    /// Custom header fields.
    pub max_headers: usize,
    /// Recipients one tenant may have waiting (queued, deferred or being sent).
    pub max_queued_per_tenant: u64,
    /// Test messages one tenant may have queued or being sent.
    pub max_pending_tests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_headers: 50,
            max_queued_per_tenant: 1_000_000,
            max_pending_tests: 5,
        }
    }
}

impl Limits {
    /// The largest request body: a batch of large messages needs room beyond one message.
    pub fn max_body(&self) -> usize {
        (self.max_message_bytes * 2).max(MAX_BODY)
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    pub default_provider: Arc<DefaultProvider>,
    /// Wakes this node's worker when a message is stored.
    pub wake: Arc<Notify>,
    /// This node's view of tenants' providers.
    pub cache: Arc<ProviderCache>,
    /// A node whose last heartbeat is older than this is taken for gone.
    pub alive_within: std::time::Duration,
    /// Limits on submitted messages.
    pub limits: Limits,
    /// Where tenants may make this node connect: checked at the edge where it
    /// can be (IP literals), and again at every connection.
    pub egress: Arc<herald_smtp::Egress>,
}

/// The HTTP API: everything on a node with the api role, else only the health checks.
pub fn router(state: AppState, api: bool) -> Router {
    let routes = if api {
        routes::router()
    } else {
        routes::health()
    };
    routes
        .layer(DefaultBodyLimit::max(state.limits.max_body()))
        .with_state(state)
}
