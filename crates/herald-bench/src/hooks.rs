//! The webhook sink: an HTTP server on loopback that answers 204 to every
//! POST and counts the events by type, for the end-to-end phase with webhooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

#[derive(Default)]
struct Counts {
    by_type: Mutex<HashMap<String, u64>>,
    changed: tokio::sync::Notify,
}

/// A running webhook sink.
pub struct Hooks {
    pub url: String,
    counts: Arc<Counts>,
}

impl Hooks {
    pub async fn start() -> anyhow::Result<Hooks> {
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(counts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Hooks { url, counts })
    }

    /// How many events of each type arrived so far.
    pub fn counts(&self) -> HashMap<String, u64> {
        self.counts.by_type.lock().expect("counts lock").clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// Waits until `target` events arrived in all, or `pause` passed; returns the total.
    pub async fn wait_for(&self, target: u64, pause: Duration) -> u64 {
        let changed = self.counts.changed.notified();
        let total = self.total();
        if total >= target {
            return total;
        }
        let _ = tokio::time::timeout(pause, changed).await;
        self.total()
    }
}

/// Counts the event by its body's `type`, which Herald writes first: read
/// without parsing the rest, so that the sink costs the machine little.
async fn receive(State(counts): State<Arc<Counts>>, body: axum::body::Bytes) -> StatusCode {
    let kind = body
        .strip_prefix(b"{\"type\":\"")
        .and_then(|rest| rest.split(|b| *b == b'"').next())
        .map_or_else(
            || "unreadable".to_owned(),
            |t| String::from_utf8_lossy(t).into_owned(),
        );
    *counts
        .by_type
        .lock()
        .expect("counts lock")
        .entry(kind)
        .or_default() += 1;
    counts.changed.notify_waiters();
    StatusCode::NO_CONTENT
}
