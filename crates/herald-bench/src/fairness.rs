//! Fairness between tenants (Herald issue 13): whether one tenant's slow
//! backlog delays another tenant's mail. Tenant A queues a large backlog whose
//! provider's server answers each message only after a delay, through a few
//! connections; once it is committed, tenant B submits single messages at a
//! low fixed rate to a fast sink of its own, and each one is timed from its
//! scheduled submission to its arrival at B's sink. The phase ends when B's
//! messages are in, not when A's backlog is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::api::Api;
use crate::load::{self, Batch};
use crate::place::{Leftovers, NodeSpec, Place};
use crate::sink::{Behaviour, Sink};
use crate::sys::round;
use crate::{Options, content};

/// Messages tenant B submits, one per request.
pub const B_MESSAGES: u64 = 100;
/// B's offered rate in messages per second: a trickle next to A's backlog.
pub const B_RATE: f64 = 10.0;
/// The target: B's p99 from submission to delivery, in milliseconds.
pub const TARGET_P99_MS: f64 = 1000.0;

/// B's `i`-th recipient: how its delivery is found among the sink's arrivals.
fn recipient(i: u64) -> String {
    format!("fair-b-{i}@sink.example")
}

/// The index in a recipient made by [`recipient`].
fn index_of(address: &str) -> Option<u64> {
    address
        .strip_prefix("fair-b-")?
        .split_once('@')?
        .0
        .parse()
        .ok()
}

/// Runs the phase on a fresh store with one delivering node and returns its figures.
pub async fn run(options: &Options, leftovers: &mut Leftovers) -> anyhow::Result<Value> {
    let slow = Sink::start_with(Behaviour {
        delay: Some(options.fairness_delay),
        record: false,
    })
    .await?;
    let fast = Sink::start_with(Behaviour {
        delay: None,
        record: true,
    })
    .await?;
    let place = Place::fresh(options.database_url.as_deref(), "fairness").await?;
    let node = place
        .start(&NodeSpec {
            name: "bench-fairness",
            worker: true,
            concurrency: options.concurrency,
        })
        .await?;
    let api = Api::new(node.http_addr)?;
    let a = api
        .set_up_tenant_named(
            "fair-a",
            "Fairness A (slow backlog)",
            slow.port(),
            options.fairness_connections,
        )
        .await?;
    let b = api
        .set_up_tenant_named(
            "fair-b",
            "Fairness B (fast)",
            fast.port(),
            options.connections,
        )
        .await?;

    // A's backlog, committed before B starts; the worker is already running,
    // as it would be on a live node.
    let backlog = options.fairness_backlog;
    let apis = std::slice::from_ref(&api);
    let has_batch = api.has_batch(&a).await?;
    let submitted = if has_batch {
        let per = backlog.clamp(1, 1000);
        let batch = Batch {
            body: content::batch_bytes(options.size, per as usize).leak(),
            size: per,
        };
        load::batches(
            apis,
            &a,
            batch,
            (backlog / per).max(1),
            options.batch_clients,
        )
        .await
    } else {
        let body = content::submission_bytes(options.size).leak();
        load::single(apis, &a, body, backlog, options.clients).await
    };
    anyhow::ensure!(
        submitted.accepted > 0,
        "tenant A's backlog was not accepted: {}",
        submitted.first_problem.as_deref().unwrap_or("no answer")
    );

    // B's trickle, each message to a recipient of its own.
    let bodies: Vec<&'static [u8]> = (0..B_MESSAGES)
        .map(|i| {
            let json = serde_json::to_vec(&content::submission_to(options.size, &recipient(i)))
                .expect("JSON serialises");
            &*json.leak()
        })
        .collect();
    let a_before = slow.messages();
    let started = Instant::now();
    let generator = {
        let (api, b) = (api.clone(), b.clone());
        tokio::spawn(async move {
            load::open_loop(&api, &b, &bodies, B_RATE, B_MESSAGES as f64 / B_RATE).await
        })
    };
    let deadline = started + options.deadline;
    let mut generator = Some(generator);
    let mut finished = None;
    loop {
        if let Some(handle) = generator.take_if(|h| h.is_finished()) {
            finished = Some(handle.await?);
        }
        // Until the submissions are answered, the target is all of them; then what was accepted.
        let target = finished
            .as_ref()
            .map_or(B_MESSAGES, |r: &load::OpenLoop| r.outcome.accepted);
        let reached = fast.wait_for(target, Duration::from_millis(200)).await;
        if (reached >= target && finished.is_some()) || Instant::now() >= deadline {
            break;
        }
    }
    let ended = Instant::now();
    let a_after = slow.messages();
    let b_run = match finished {
        Some(run) => run,
        None => generator.context("the submission task")?.await?,
    };

    // Each B message's latency: from its scheduled submission to its arrival.
    // One still missing at the end counts with the phase's end instead, a
    // lower bound, so that a stuck message raises the figures.
    let mut arrived: HashMap<u64, Instant> = HashMap::new();
    let mut unmatched = 0u64;
    for (to, at) in fast.arrivals() {
        match index_of(&to) {
            Some(i) if i < B_MESSAGES => {
                arrived.entry(i).or_insert(at);
            }
            _ => unmatched += 1,
        }
    }
    let delivered = arrived.len() as u64;
    let missing_counted = delivered < b_run.outcome.accepted;
    let latencies: Vec<Duration> = (0..B_MESSAGES)
        .filter_map(|i| {
            let scheduled = b_run.scheduled(i);
            match arrived.get(&i) {
                Some(at) => Some(at.saturating_duration_since(scheduled)),
                None => missing_counted.then(|| ended.saturating_duration_since(scheduled)),
            }
        })
        .collect();
    let seconds = ended.duration_since(started).as_secs_f64();

    let mut b_json = b_run.outcome.json();
    b_json["messages"] = json!(B_MESSAGES);
    b_json["offered_per_second"] = json!(B_RATE);
    b_json["achieved_offered_per_second"] = json!(round(b_run.achieved_per_second, 1));
    b_json["worst_dispatch_lag_ms"] =
        json!(round(b_run.worst_dispatch_lag.as_secs_f64() * 1000.0, 2));
    b_json["delivered"] = json!(delivered);
    b_json["complete"] = json!(delivered >= b_run.outcome.accepted);
    b_json["undelivered_counted_at_phase_end"] = json!(if missing_counted {
        B_MESSAGES - delivered
    } else {
        0
    });
    b_json["unmatched_arrivals"] = json!(unmatched);
    b_json["delivery_latency_ms"] = load::percentiles(&latencies);
    let a_delivered = a_after - a_before;

    drop(api);
    node.shutdown().await;
    leftovers.retire(place).await;
    Ok(json!({
        "what": "whether one tenant's slow backlog delays another: B's single messages timed from their scheduled submission to their arrival at B's own sink while A's backlog drains through a slow server",
        "target": format!("B's delivery p99 <= {TARGET_P99_MS} ms"),
        "seconds": round(seconds, 3),
        "a": {
            "backlog": backlog,
            "submitted_through": if has_batch { "batch API" } else { "single API" },
            "submission": submitted.json(),
            "sink_delay_ms": options.fairness_delay.as_millis() as u64,
            "max_connections": options.fairness_connections,
            "delivered_before_b_started": a_before,
            "delivered_during_phase": a_delivered,
            "delivered_per_second_during_phase": round(a_delivered as f64 / seconds.max(1e-9), 1),
            "backlog_left_at_end": submitted.accepted.saturating_sub(a_after),
        },
        "b": b_json,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_give_back_their_index() {
        for i in [0, 7, 99] {
            assert_eq!(index_of(&recipient(i)), Some(i));
        }
        assert_eq!(index_of("bench@sink.example"), None);
        assert_eq!(index_of("fair-b-x@sink.example"), None);
    }
}
