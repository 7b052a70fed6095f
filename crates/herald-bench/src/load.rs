//! The load generators: closed-loop clients on the single and batch APIs (as
//! fast as the node answers), and an open-loop generator that submits on a
//! fixed schedule whatever the node does, for honest latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::api::{Api, Tenant};
use crate::poster::Poster;
use crate::sys::round;

/// What one load run got back, over HTTP or over SMTP.
#[derive(Default)]
pub struct Outcome {
    /// Messages answered as queued (202, `queued` in a batch, or SMTP's
    /// `250` after the content).
    pub accepted: u64,
    /// Messages refused (4xx, an error in a batch, or an SMTP refusal at any step).
    pub refused: u64,
    /// HTTP requests that failed without an answer or with a 5xx; SMTP
    /// sessions that broke off (connection lost, timeout, refused greeting).
    pub failed: u64,
    /// HTTP requests made (the SMTP generator counts messages, not requests).
    pub requests: u64,
    pub seconds: f64,
    /// Each HTTP request's time to its answer; each accepted SMTP message's
    /// time from its MAIL to the `250` after its content.
    pub latencies: Vec<Duration>,
    /// The first problem seen, to show what went wrong.
    pub first_problem: Option<String>,
}

impl Outcome {
    /// Accepted messages per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn merge(&mut self, other: Outcome) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.failed += other.failed;
        self.requests += other.requests;
        self.latencies.extend(other.latencies);
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    /// Counts a single submission's answer: `202` accepted, a server error
    /// failed, anything else refused; `body` says why when it was not accepted.
    fn verdict(&mut self, status: u16, body: impl FnOnce() -> String) {
        if status == StatusCode::ACCEPTED.as_u16() {
            self.accepted += 1;
            return;
        }
        if status >= 500 {
            self.failed += 1;
        } else {
            self.refused += 1;
        }
        self.problem(format!("{status}: {}", body()));
    }

    pub(crate) fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    /// The figures of an HTTP run as JSON, latencies as percentiles in milliseconds.
    pub fn json(&self) -> Value {
        json!({
            "accepted": self.accepted,
            "refused": self.refused,
            "failed_requests": self.failed,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "accepted_per_second": round(self.rate(), 0),
            "request_latency_ms": percentiles(&self.latencies),
            "first_problem": self.first_problem,
        })
    }
}

/// p50, p90, p99, p99.9 and max of `samples` in milliseconds (nearest rank).
pub fn percentiles(samples: &[Duration]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        round(ms[rank - 1], 2)
    };
    json!({
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(ms[ms.len() - 1], 2),
        "mean": round(ms.iter().sum::<f64>() / ms.len() as f64, 2),
        "samples": ms.len(),
    })
}

/// Posts one single-message submission and reads the verdict.
async fn post_one(api: &Api, url: &str, token: &str, body: &'static [u8], out: &mut Outcome) {
    let started = Instant::now();
    let sent = api
        .client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    out.requests += 1;
    match sent {
        Ok(response) => {
            let status = response.status();
            // The body is read to the end so the connection can be reused.
            let text = response.text().await.unwrap_or_default();
            out.latencies.push(started.elapsed());
            out.verdict(status.as_u16(), || text);
        }
        Err(error) => {
            out.failed += 1;
            out.problem(error.to_string());
        }
    }
}

/// `clients` clients, each submitting one message at a time through the single
/// API until `count` have been submitted; spread over the nodes' APIs. Each
/// client keeps one connection and posts a prepared request ([`Poster`]).
pub async fn single(
    apis: &[Api],
    tenant: &Tenant,
    body: &'static [u8],
    count: u64,
    clients: usize,
) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    closed_loop(apis, clients, |api| {
        let mut poster = Poster::new(api.addr, &Api::messages_path(tenant), &tenant.sender, body);
        let next = next.clone();
        async move {
            let mut out = Outcome::default();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let started = Instant::now();
                let answer = poster.post().await;
                out.requests += 1;
                match answer {
                    Ok(answer) => {
                        out.latencies.push(started.elapsed());
                        out.verdict(answer.status, || {
                            String::from_utf8_lossy(&answer.body).into_owned()
                        });
                    }
                    Err(error) => {
                        out.failed += 1;
                        out.problem(error);
                    }
                }
            }
            out
        }
    })
    .await
}

/// Runs `clients` closed-loop clients at once, spread over the nodes' APIs,
/// and adds up what they got back, timed from the first start to the last end.
async fn closed_loop<F, C>(apis: &[Api], clients: usize, client: C) -> Outcome
where
    C: Fn(Api) -> F,
    F: Future<Output = Outcome> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        tasks.spawn(client(apis[i % apis.len()].clone()));
    }
    let mut total = Outcome::default();
    while let Some(Ok(out)) = tasks.join_next().await {
        total.merge(out);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// A prepared batch request body and how many messages it holds.
#[derive(Clone, Copy)]
pub struct Batch {
    pub body: &'static [u8],
    pub size: u64,
}

/// `clients` clients, each posting one batch at a time until `batches`
/// batches have been posted; spread over the nodes' APIs.
pub async fn batches(
    apis: &[Api],
    tenant: &Tenant,
    batch: Batch,
    batches: u64,
    clients: usize,
) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    closed_loop(apis, clients, |api| {
        let url = api.batch_url(tenant);
        let token = tenant.sender.clone();
        let next = next.clone();
        async move {
            let mut out = Outcome::default();
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                let sent_at = Instant::now();
                let sent = api
                    .client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(batch.body)
                    .send()
                    .await;
                out.requests += 1;
                let response = match sent {
                    Ok(response) => response,
                    Err(error) => {
                        out.failed += 1;
                        out.problem(error.to_string());
                        continue;
                    }
                };
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                out.latencies.push(sent_at.elapsed());
                if status != StatusCode::OK {
                    out.failed += 1;
                    out.problem(format!("{status}: {text}"));
                    continue;
                }
                let answer: Value = serde_json::from_str(&text).unwrap_or_default();
                let accepted = answer["accepted"].as_u64().unwrap_or(0);
                out.accepted += accepted;
                out.refused += batch.size.saturating_sub(accepted);
                if accepted < batch.size {
                    let refusal = answer["results"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r.get("error").is_some()))
                        .map_or_else(|| text.chars().take(300).collect(), Value::to_string);
                    out.problem(format!(
                        "batch refused {}: {refusal}",
                        batch.size - accepted
                    ));
                }
            }
            out
        }
    })
    .await
}

/// What the open-loop generator measured.
pub struct OpenLoop {
    pub outcome: Outcome,
    /// The rate asked for, and the rate the schedule actually achieved.
    pub offered_per_second: f64,
    pub achieved_per_second: f64,
    /// How late the generator itself issued requests, at worst.
    pub worst_dispatch_lag: Duration,
    /// When the first request was scheduled, and the time between two.
    pub start: Instant,
    pub period: Duration,
}

impl OpenLoop {
    /// When request `i` (from 0) was scheduled: the moment its latency counts from.
    pub fn scheduled(&self, i: u64) -> Instant {
        self.start + self.period.mul_f64(i as f64)
    }
}

/// Issues single-API submissions at `rate` per second for `seconds`, each on
/// its own task at its scheduled time whether or not earlier ones have been
/// answered (open loop). A request's latency counts from its scheduled time,
/// so a stalled node or generator shows in the figures instead of quietly
/// lowering the offered rate. Request `i` posts `bodies[i % bodies.len()]`,
/// so that each message can be told apart where it is delivered.
pub async fn open_loop(
    api: &Api,
    tenant: &Tenant,
    bodies: &[&'static [u8]],
    rate: f64,
    seconds: f64,
) -> OpenLoop {
    let count = (rate * seconds).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let url = Arc::new(api.messages_url(tenant));
    let results = Arc::new(Mutex::new(Outcome::default()));
    let mut tasks = JoinSet::new();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut worst_lag = Duration::ZERO;
    for i in 0..count {
        let at = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        worst_lag = worst_lag.max(tokio::time::Instant::now().saturating_duration_since(at));
        let (api, url, token, results) = (
            api.clone(),
            url.clone(),
            tenant.sender.clone(),
            results.clone(),
        );
        let body = bodies[i as usize % bodies.len()];
        tasks.spawn(async move {
            let mut one = Outcome::default();
            post_one(&api, &url, &token, body, &mut one).await;
            // Latency from the scheduled time, not from when the task ran.
            one.latencies = vec![at.elapsed()];
            results.lock().await.merge(one);
        });
        // Finished tasks are reaped as we go, so they do not pile up.
        while tasks.try_join_next().is_some() {}
    }
    // The offered rate is what the schedule managed, before waiting for the last answers.
    let dispatched = start.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let mut outcome = std::mem::take(&mut *results.lock().await);
    outcome.seconds = elapsed;
    OpenLoop {
        achieved_per_second: count as f64 / dispatched.max(1e-9),
        offered_per_second: rate,
        worst_dispatch_lag: worst_lag,
        start: start.into_std(),
        period,
        outcome,
    }
}
