//! Herald's REST API: thin axum handlers that turn JSON into domain values,
//! check the caller's role and tenant, and call the store.

mod auth;
mod body;
pub mod client;
pub mod cron;
mod early;
mod error;
pub mod gate;
pub mod openapi;
pub mod panic;
pub mod password;
mod routes;
pub mod scheduler;
pub mod service;
pub mod template;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use herald_core::Sealer;
use herald_delivery::{DefaultProvider, ProviderCache};
use herald_store::{NodeRecord, Store};
use tokio::sync::Notify;

pub use auth::Caller;
pub use error::{ApiError, Chain};
pub use routes::gateway_protocol::{MAX_WAITING_CLAIMS, WaitingClaims};
pub use routes::{Object, object_in_path};

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

/// What every handler can reach: the node's state behind one reference,
/// so that a request's copy of it (axum hands each extractor and handler
/// its own) costs one count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<NodeState>);

impl From<NodeState> for AppState {
    fn from(state: NodeState) -> Self {
        AppState(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        &self.0
    }
}

/// The node's services and settings, as [`AppState`] shares them.
pub struct NodeState {
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    pub default_provider: Arc<DefaultProvider>,
    /// Wakes this node's worker when a message is stored.
    pub wake: Arc<Notify>,
    /// This node's worker, which takes messages as they are stored while it
    /// has room for them (`None` on a node that does not deliver).
    pub handoff: Option<Arc<dyn herald_store::handoff::Handoff>>,
    /// This node's view of tenants' providers.
    pub cache: Arc<ProviderCache>,
    /// A node whose last heartbeat is older than this is taken for gone.
    pub alive_within: std::time::Duration,
    /// Limits on submitted messages.
    pub limits: Limits,
    /// Where tenants may make this node connect: checked at the edge where it
    /// can be (IP literals), and again at every connection.
    pub egress: Arc<herald_smtp::Egress>,
    /// Where this node takes mail over SMTP, for the console to tell.
    pub submission: Submission,
    /// This node's metrics, where submissions are counted.
    pub metrics: Arc<herald_metrics::Metrics>,
    /// The guarded HTTP client webhooks are posted through (with the
    /// webhook timeout), for test events sent from the API.
    pub webhook_http: Arc<herald_delivery::guarded_http::GuardedHttp>,
    /// This node's name, recorded on what it does (a schedule's firings).
    pub node: Arc<str>,
    /// Wakes this node's webhook dispatcher when outcomes a gateway reported
    /// wrote webhook events.
    pub events_written: Arc<Notify>,
    /// Wakes this node's scheduler when a schedule is created or changed.
    pub schedules_changed: Arc<Notify>,
    /// Told (every waiter at once) when mail is stored, here or on another
    /// node: gateways' claims waiting for mail look again.
    pub mail_arrived: Arc<Notify>,
    /// The lease a gateway's claim holds (the node's own lease).
    pub gateway_lease: std::time::Duration,
    /// The longest a gateway may put a recipient off (the node's
    /// `--max-age`: past it the recipient fails at its next attempt anyway).
    pub gateway_longest_deferral: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`),
    /// for the address a gateway instance is shown calling from.
    pub trusted_proxies: Vec<herald_store::ipnet::IpNet>,
    /// Turns true when the node begins to stop: a gateway's waiting claim
    /// answers at once, so it does not hold the node's shutdown.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Renders tenants' templates in renderer processes with hard limits.
    pub renderer: Arc<template::Renderer>,
    /// How many claims of each gateway wait at this node.
    pub waiting_claims: Arc<WaitingClaims>,
}

impl AppState {
    /// Stores messages (one, or a batch in one transaction), hands this
    /// node's worker those it has room for, and wakes whoever is to claim
    /// the others. The answers are the store's, in order.
    pub async fn store_mail(
        &self,
        messages: Vec<herald_store::NewMessage>,
    ) -> Result<Vec<herald_store::Submitted>, herald_store::StoreError> {
        let submitted =
            herald_store::handoff::submit(self.store.clone(), self.handoff.clone(), messages)
                .await?;
        if herald_store::handoff::left_for_claims(&submitted) {
            self.mail_stored();
        }
        Ok(submitted)
    }

    /// Tells this node's worker and the gateways' waiting claims that mail
    /// was stored.
    pub fn mail_stored(&self) {
        self.wake.notify_one();
        self.mail_arrived.notify_waiters();
    }

    /// Counts what the store answered to submissions from `source`: each
    /// new message accepted, each one stored before under its idempotency
    /// key a duplicate.
    pub fn count_submitted(
        &self,
        source: herald_metrics::Source,
        submitted: &[herald_store::Submitted],
    ) {
        use herald_metrics::Submitted as Counted;
        let duplicates = submitted.iter().filter(|s| s.duplicate).count() as u64;
        let accepted = submitted.len() as u64 - duplicates;
        for (result, count) in [
            (Counted::Accepted, accepted),
            (Counted::Duplicate, duplicates),
        ] {
            if count > 0 {
                self.metrics.submitted(source, result, count);
            }
        }
    }

    /// Counts `count` submissions from `source` that were not stored.
    pub fn count_refused(&self, source: herald_metrics::Source, count: u64) {
        self.metrics
            .submitted(source, herald_metrics::Submitted::Refused, count);
    }
}

/// The ports of this node's SMTP submission listener; none when it does not run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Submission {
    /// The port with STARTTLS (`--smtp-listen`).
    pub starttls_port: Option<u16>,
    /// The port with implicit TLS (`--smtps-listen`).
    pub tls_port: Option<u16>,
}

/// The HTTP API: everything on a node with the api role, else only the health checks.
pub fn router(state: AppState, api: bool) -> Router {
    let routes = if api {
        routes::router()
    } else {
        routes::health()
    };
    let max_body = state.limits.max_body();
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            max_body,
            early::refuse_early,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(panic::contain_panics))
        .with_state(state)
}

/// Whether `node` counts as alive at `now_ms`: its latest heartbeat is at most
/// `alive_within` old. The one rule for the API's node list, the test
/// message's "is a worker alive" check and the console's pages, so they
/// never disagree about the same node. A heartbeat ahead of this node's
/// clock (skew between nodes) counts as alive.
pub fn is_alive(node: &NodeRecord, now_ms: i64, alive_within: std::time::Duration) -> bool {
    seen_within(node.heartbeat_at, now_ms, alive_within)
}

/// Whether something last seen at `last_seen_at` counts as alive at
/// `now_ms`: a node by its heartbeat ([`is_alive`]), a gateway's instance by
/// its latest poll. One rule, so a node and a gateway are alive alike.
pub fn seen_within(last_seen_at: i64, now_ms: i64, alive_within: std::time::Duration) -> bool {
    let within = i64::try_from(alive_within.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(last_seen_at) <= within
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn node(heartbeat_at: i64) -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            roles: vec![herald_core::NodeRole::Worker],
            version: "test".into(),
            started_at: 0,
            heartbeat_at,
            incarnation: Some("i".into()),
        }
    }

    #[test]
    fn a_node_is_alive_while_its_heartbeat_is_within_the_window() {
        let within = Duration::from_secs(30);
        // Just beaten, exactly at the edge, one millisecond past it.
        assert!(is_alive(&node(100_000), 100_000, within));
        assert!(is_alive(&node(100_000), 130_000, within));
        assert!(!is_alive(&node(100_000), 130_001, within));
        // A heartbeat from a clock ahead of ours is not taken for gone.
        assert!(is_alive(&node(200_000), 100_000, within));
        // Extremes neither overflow nor panic.
        assert!(!is_alive(&node(i64::MIN), i64::MAX, within));
        assert!(is_alive(&node(0), i64::MAX, Duration::MAX));
    }
}
