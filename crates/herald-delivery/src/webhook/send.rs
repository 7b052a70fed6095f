//! One signed POST of one event to one webhook, through the guarded HTTP client.

use std::time::Instant;

use herald_core::terminal::escape_unprintable;
use herald_core::webhook::{seal_context, secret_key};
use herald_core::{Sealer, WebhookId};

use super::sign::{SigningKey, signature, signing_key};
use crate::guarded_http::GuardedHttp;

/// How much of an endpoint's answer is read: enough for an error's first words.
const MAX_ANSWER: usize = 16 * 1024;
/// How much of a refusing endpoint's answer is kept with the attempt.
const ANSWER_EXCERPT: usize = 200;

/// One event to post.
pub struct Event<'a> {
    pub url: &'a str,
    /// The `webhook-id`: the same on every attempt, so receivers can drop repeats.
    pub id: &'a str,
    pub body: &'a str,
}

/// What one POST came to.
#[derive(Clone, Debug)]
pub struct Posted {
    /// True for a 2xx answer.
    pub delivered: bool,
    pub status: Option<u16>,
    /// Why it failed, in words a tenant can act on.
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The signing keys of a webhook: its secret, and the previous one while a
/// rotation's overlap lasts. An error says which could not be opened.
pub fn keys(
    sealer: &Sealer,
    webhook: WebhookId,
    sealed: &str,
    previous: Option<&str>,
) -> Result<Vec<SigningKey>, String> {
    let context = seal_context(&webhook.to_string());
    std::iter::once(sealed)
        .chain(previous)
        .map(|sealed| {
            let secret = sealer
                .open(sealed, &context)
                .map_err(|e| format!("the webhook's signing secret cannot be opened: {e}"))?;
            secret_key(secret.expose())
                .map(|key| signing_key(&key))
                .map_err(|e| format!("the signing secret {e}"))
        })
        .collect()
}

/// Posts `event` signed with `keys` at `now_s` (Unix seconds).
pub async fn post(
    http: &GuardedHttp,
    keys: &[SigningKey],
    event: &Event<'_>,
    now_s: i64,
) -> Posted {
    let started = Instant::now();
    let timestamp = now_s.to_string();
    let signed = signature(keys, event.id, now_s, event.body);
    let headers = [
        ("content-type", "application/json"),
        ("webhook-id", event.id),
        ("webhook-timestamp", timestamp.as_str()),
        ("webhook-signature", signed.as_str()),
    ];
    let answer = http
        .post(event.url, &headers, event.body.as_bytes(), MAX_ANSWER)
        .await;
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match answer {
        Ok(a) if a.status.is_success() => Posted {
            delivered: true,
            status: Some(a.status.as_u16()),
            error: None,
            duration_ms,
        },
        Ok(a) => Posted {
            delivered: false,
            status: Some(a.status.as_u16()),
            error: Some(refusal(a.status, &a.body)),
            duration_ms,
        },
        Err(e) => Posted {
            delivered: false,
            status: None,
            error: Some(e.to_string()),
            duration_ms,
        },
    }
}

/// A non-2xx answer in words: its status and the start of its body, made safe to print.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.trim().chars().take(ANSWER_EXCERPT).collect();
    if excerpt.is_empty() {
        format!("the endpoint answered HTTP {status}")
    } else {
        format!(
            "the endpoint answered HTTP {status}: {}",
            escape_unprintable(&excerpt)
        )
    }
}
