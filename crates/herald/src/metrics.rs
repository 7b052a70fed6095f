//! The node's side of its metrics: the `/metrics` listener, the count of
//! HTTP requests by route template, and the periodic count of the queue.
//!
//! The listener is separate from the API's address and takes no token: it is
//! meant for a private network where Prometheus scrapes it, and it serves
//! nothing but counters (no tenant, address, subject or secret is a label).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_metrics::Metrics;
use herald_store::Store;
use tokio::sync::watch;

/// How often a node counts the installation's unfinished recipients: one
/// query, whatever the number of scrapes.
pub const QUEUE_COUNT_EVERY: Duration = Duration::from_secs(15);

/// The metrics listener's routes: `GET /metrics`, and nothing else.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(CONTENT_TYPE, herald_metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

/// Counts every request the router answers by method, route template and
/// status. Added with `Router::layer`, it runs after routing, so the matched
/// template is known; a request no route matched counts as `unmatched`, so a
/// scan of random paths adds one series, not one per path.
pub async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    // Methods are a closed set in practice; an invented one is one series more at most per name.
    let method = match method.as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method.as_str(),
        _ => "other",
    };
    metrics.http_request(method, &route, response.status().as_u16());
    response
}

/// Counts the installation's unfinished recipients every
/// [`QUEUE_COUNT_EVERY`] until `stop`.
pub async fn count_queue(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        match store.queue_depth().await {
            Ok(depth) => {
                metrics.queue_depth(depth.queued, depth.scheduled, depth.deferred, depth.sending)
            }
            Err(error) => tracing::warn!(%error, "could not count the queue for the metrics"),
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_COUNT_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}
