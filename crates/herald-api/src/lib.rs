//! Herald's REST API: thin axum handlers that turn JSON into domain values,
//! check the caller's role and tenant, and call the store.

mod auth;
mod body;
mod error;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use herald_core::Sealer;
use herald_delivery::{DefaultProvider, ProviderCache};
use herald_store::Store;
use tokio::sync::Notify;

pub use error::ApiError;

/// The largest request body accepted; message content has its own, smaller limits.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

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
}

/// The HTTP API: everything on a node with the api role, else only the health checks.
pub fn router(state: AppState, api: bool) -> Router {
    let routes = if api {
        routes::router()
    } else {
        routes::health()
    };
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
