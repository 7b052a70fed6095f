//! A node's Prometheus metrics: the one registry, every metric family Herald
//! exports, and the text the `/metrics` listener serves.
//!
//! The crates that record (delivery, ingress, API, the binary) call the
//! methods of [`Metrics`] with closed words (`Source`, an outcome, a step, a
//! route template), never with tenants, addresses, subjects or secrets: the
//! label sets stay small however many tenants an installation has.

use std::sync::Mutex;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::encode`] writes: the Prometheus
/// text format 0.0.4, which every Prometheus version and `promtool` read.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A label set: fixed names, values from a closed set of words.
type Labels<const N: usize> = [(&'static str, String); N];

/// Where a submission came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/tenants/{t}/messages` and its batch form.
    Api,
    /// The SMTP submission listener.
    Smtp,
    /// A provider's test message.
    Test,
    /// A firing of a tenant's recurring schedule.
    Schedule,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Smtp => "smtp",
            Source::Test => "test",
            Source::Schedule => "schedule",
        }
    }
}

/// What became of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Stored as a new message.
    Accepted,
    /// The same idempotency key was stored before: the earlier message is answered.
    Duplicate,
    /// Not stored (invalid, over a limit, the store unavailable).
    Refused,
}

impl Submitted {
    fn as_str(self) -> &'static str {
        match self {
            Submitted::Accepted => "accepted",
            Submitted::Duplicate => "duplicate",
            Submitted::Refused => "refused",
        }
    }
}

/// The state of this node's route pools, as the worker reads it every turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolGauges {
    /// Route pools kept.
    pub routes: u64,
    /// Connection slots in use (a message being sent, or a connection opening for one).
    pub busy: u64,
    /// Open connections waiting for their next message.
    pub idle: u64,
    /// Routes whose every slot is held and none came free lately.
    pub stalled: u64,
}

/// Every metric of one node, in one registry.
pub struct Metrics {
    registry: Registry,
    submissions: Family<Labels<2>, Counter>,
    deliveries: Family<Labels<2>, Counter>,
    delivery_duration: Histogram,
    delivery_latency: Histogram,
    queue: Family<Labels<1>, Gauge>,
    pool_connections: Family<Labels<1>, Gauge>,
    pool_routes: Gauge,
    stalled_routes: Gauge,
    claim_size: Histogram,
    claim_duration: Histogram,
    handed: Counter,
    commit_size: Histogram,
    commit_duration: Histogram,
    http_requests: Family<Labels<3>, Counter>,
    smtp_sessions: Counter,
    smtp_replies: Family<Labels<1>, Counter>,
    node_info: Family<Labels<2>, Gauge>,
    webhook_posts: Family<Labels<1>, Counter>,
    webhook_duration: Histogram,
    /// Serialises encoding: the registry is read whole.
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Seconds, from a few milliseconds (a local server) to about a minute (the longest SMTP timeouts).
fn transaction_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Seconds, from half a millisecond to about 30 s: a claim or a commit.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Counts, from 1 to 4,096: recipients claimed or outcomes committed at once.
fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Metrics {
    /// A registry with every family registered and nothing counted yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let m = Metrics {
            submissions: Family::default(),
            deliveries: Family::default(),
            delivery_duration: transaction_buckets(),
            // From 50 ms to about 29 hours: mail deferred for a day still lands in a bucket.
            delivery_latency: Histogram::new(exponential_buckets(0.05, 2.0, 22)),
            queue: Family::default(),
            pool_connections: Family::default(),
            pool_routes: Gauge::default(),
            stalled_routes: Gauge::default(),
            claim_size: batch_buckets(),
            claim_duration: store_buckets(),
            handed: Counter::default(),
            commit_size: batch_buckets(),
            commit_duration: store_buckets(),
            http_requests: Family::default(),
            smtp_sessions: Counter::default(),
            smtp_replies: Family::default(),
            node_info: Family::default(),
            webhook_posts: Family::default(),
            webhook_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            encoding: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "submissions",
            "Messages submitted, by source (api, smtp, test) and result (accepted, duplicate, refused)",
            m.submissions.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts per recipient, by outcome (sent, deferred, failed) and the SMTP step that decided it",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Time with the server per delivered message: one SMTP transaction (connection included when opened for it)",
            m.delivery_duration.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from a message's submission to a recipient's sent outcome",
            m.delivery_latency.clone(),
        );
        registry.register(
            "queue_recipients",
            "Unfinished recipients of the installation by status, counted by this node every few seconds",
            m.queue.clone(),
        );
        registry.register(
            "pool_connections",
            "SMTP connections of this node's route pools, by state (busy: sending a message; idle: open and waiting)",
            m.pool_connections.clone(),
        );
        registry.register(
            "pool_routes",
            "Route pools this node keeps",
            m.pool_routes.clone(),
        );
        registry.register(
            "pool_stalled_routes",
            "Routes whose every connection slot is held and none came free lately (a slow or stalled server, a rate limit)",
            m.stalled_routes.clone(),
        );
        registry.register(
            "claim_recipients",
            "Recipients taken by one claim of the worker",
            m.claim_size.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Time of one claim of the worker",
            m.claim_duration.clone(),
        );
        registry.register(
            "handed_recipients",
            "Recipients handed to the worker as they were stored (claimed in their submission's transaction, no claim of their own)",
            m.handed.clone(),
        );
        registry.register(
            "commit_outcomes",
            "Outcomes recorded by one commit of the worker's recorder",
            m.commit_size.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time of one commit of the worker's recorder",
            m.commit_duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "smtp_sessions",
            "Sessions opened with the SMTP submission listener",
            m.smtp_sessions.clone(),
        );
        registry.register(
            "smtp_replies",
            "Replies of the SMTP submission listener, by class (2xx, 3xx, 4xx, 5xx)",
            m.smtp_replies.clone(),
        );
        registry.register(
            "node_info",
            "This node's version and roles (the value is always 1)",
            m.node_info.clone(),
        );
        registry.register(
            "webhook_posts",
            "Webhook events posted by this node, by result (delivered: a 2xx answer; failed: any other answer, a timeout or a refusal)",
            m.webhook_posts.clone(),
        );
        registry.register(
            "webhook_post_duration_seconds",
            "Time of one webhook post, answer included",
            m.webhook_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one webhook post and its time.
    pub fn webhook_posted(&self, delivered: bool, seconds: f64) {
        let result = if delivered { "delivered" } else { "failed" };
        self.webhook_posts
            .get_or_create(&[("result", result.to_owned())])
            .inc();
        self.webhook_duration.observe(seconds);
    }

    /// Counts `count` submissions from `source` with `result`.
    pub fn submitted(&self, source: Source, result: Submitted, count: u64) {
        self.submissions
            .get_or_create(&[
                ("source", source.as_str().to_owned()),
                ("result", result.as_str().to_owned()),
            ])
            .inc_by(count);
    }

    /// Counts one recipient's attempt: `outcome` is `sent`, `deferred` or
    /// `failed`, `step` the SMTP step that decided it (`rcpt`, `data`, …).
    pub fn delivered(&self, outcome: &str, step: &str) {
        self.deliveries
            .get_or_create(&[("outcome", outcome.to_owned()), ("step", step.to_owned())])
            .inc();
    }

    /// Observes one message's time with the server.
    pub fn delivery_duration(&self, seconds: f64) {
        self.delivery_duration.observe(seconds);
    }

    /// Observes the time from a message's submission to a recipient's sent outcome.
    pub fn delivery_latency(&self, seconds: f64) {
        self.delivery_latency.observe(seconds.max(0.0));
    }

    /// Sets the installation's unfinished recipients by status.
    pub fn queue_depth(&self, queued: u64, scheduled: u64, deferred: u64, sending: u64) {
        for (status, n) in [
            ("queued", queued),
            ("scheduled", scheduled),
            ("deferred", deferred),
            ("sending", sending),
        ] {
            self.queue
                .get_or_create(&[("status", status.to_owned())])
                .set(gauge(n));
        }
    }

    /// Sets the state of this node's route pools.
    pub fn pools(&self, pools: PoolGauges) {
        for (state, n) in [("busy", pools.busy), ("idle", pools.idle)] {
            self.pool_connections
                .get_or_create(&[("state", state.to_owned())])
                .set(gauge(n));
        }
        self.pool_routes.set(gauge(pools.routes));
        self.stalled_routes.set(gauge(pools.stalled));
    }

    /// Observes one claim: how many recipients it took and how long it took.
    pub fn claim(&self, recipients: usize, seconds: f64) {
        self.claim_size.observe(recipients as f64);
        self.claim_duration.observe(seconds);
    }

    /// Counts recipients handed to the worker as they were stored.
    pub fn handed(&self, recipients: usize) {
        self.handed.inc_by(recipients as u64);
    }

    /// Observes one commit of outcomes: how many, and how long it took.
    pub fn commit(&self, outcomes: usize, seconds: f64) {
        self.commit_size.observe(outcomes as f64);
        self.commit_duration.observe(seconds);
    }

    /// Counts an HTTP request answered; `route` is the matched route
    /// template (`/v1/tenants/{tenant}/messages`), never the path itself.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&[
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Counts a session opened with the SMTP submission listener.
    pub fn smtp_session(&self) {
        self.smtp_sessions.inc();
    }

    /// Counts a reply of the SMTP submission listener.
    pub fn smtp_reply(&self, code: u16) {
        let class = match code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.smtp_replies
            .get_or_create(&[("class", class.to_owned())])
            .inc();
    }

    /// Says which version this node runs and its roles (`api,worker`).
    pub fn node_info(&self, version: &str, roles: &str) {
        self.node_info
            .get_or_create(&[("version", version.to_owned()), ("roles", roles.to_owned())])
            .set(1);
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let _one = self.encoding.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_values_are_in_the_text() {
        let metrics = Metrics::new();
        metrics.submitted(Source::Smtp, Submitted::Accepted, 2);
        metrics.delivered("sent", "data");
        metrics.delivery_latency(1.5);
        metrics.node_info("1.2.3", "api,worker");
        let text = metrics.encode();
        assert!(
            text.contains(r#"herald_submissions_total{source="smtp",result="accepted"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_deliveries_total{outcome="sent",step="data"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("herald_delivery_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_node_info{version="1.2.3",roles="api,worker"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn reply_classes_are_the_first_digit() {
        let metrics = Metrics::new();
        for code in [250, 354, 451, 554, 221] {
            metrics.smtp_reply(code);
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"herald_smtp_replies_total{class="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_smtp_replies_total{class="3xx"} 1"#),
            "{text}"
        );
    }
}
