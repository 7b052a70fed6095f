//! Delivery webhooks: where a tenant's events go (a URL the egress policy
//! admits), their signing secrets (shown once, stored sealed to the webhook),
//! and a test event sent at once.

use std::net::IpAddr;

use herald_core::timestamp::{now_ms, rfc3339};
use herald_core::webhook::{EventSet, EventType, generate_secret, seal_context};
use herald_core::{EndpointUrl, Invalid, Secret, WebhookId};
use herald_delivery::webhook::{Event, keys, post};
use herald_smtp::{Egress, EgressRule};
use herald_store::{
    AttemptResult, NewWebhook, Tenant, Warning, Webhook, WebhookChange, WebhookNext,
    WebhookTestRecord,
};
use serde::Serialize;
use serde_json::json;
use url::Host;

use super::servers::RESOLVE_WITHIN;
use crate::routes::Check;
use crate::routes::webhooks::{RotateBody, WebhookBody};
use crate::{ApiError, AppState, Caller};

/// A webhook just created or given a new secret, and that secret, which is never shown again.
pub struct WithSecret {
    pub record: Webhook,
    pub secret: String,
    /// What the administrator should know about the URL.
    pub warnings: Vec<Warning>,
}

/// What a test event came to, as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookTest {
    /// The event's `webhook-id`, as listed among the deliveries.
    pub event_id: String,
    /// True when the endpoint answered 2xx.
    pub delivered: bool,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How long the previous secret keeps signing after a rotation, unless told.
const DEFAULT_OVERLAP_SECONDS: u32 = 86_400;
/// The longest overlap a rotation may ask for: a week.
const MAX_OVERLAP_SECONDS: u32 = 604_800;
/// The `type` of a test event; no subscription is needed for it.
const TEST_EVENT: &str = "webhook.test";

/// The event types of a request: at least one, each a known word.
fn events(check: &mut Check, given: &[String]) -> Option<EventSet> {
    if given.is_empty() {
        check.fail("events", "must name at least one event type");
        return None;
    }
    let parsed: Vec<Option<EventType>> = given
        .iter()
        .enumerate()
        .map(|(i, word)| check.take(&format!("events[{i}]"), EventType::parse(word.trim())))
        .collect();
    let types: Option<Vec<EventType>> = parsed.into_iter().collect();
    check.take("events", EventSet::of(types?))
}

/// The refusal of a URL whose host is an address the egress policy forbids,
/// in the words of the rule.
fn forbidden(rule: EgressRule) -> Invalid {
    Invalid::new(format!(
        "must not point at an address this installation's egress policy forbids: {rule}"
    ))
}

/// The refusal of plain http to an address the operator has not allowed.
fn plain_http() -> Invalid {
    Invalid::new(
        "must be an https:// URL (plain http:// only to addresses in the operator's --egress-allow)",
    )
}

/// Judges the addresses a URL's host has now: refused when the egress
/// policy forbids every one of them, or when plain http would go to one
/// outside the operator's allow list.
fn admit(egress: &Egress, plain_http_url: bool, addresses: &[IpAddr]) -> Result<(), Invalid> {
    let rules: Vec<Option<EgressRule>> = addresses.iter().map(|ip| egress.refusal(*ip)).collect();
    if rules.iter().all(Option::is_some) {
        if let Some(rule) = rules.into_iter().flatten().next() {
            return Err(forbidden(rule));
        }
    }
    if plain_http_url && !addresses.iter().all(|ip| egress.allows(*ip)) {
        return Err(plain_http());
    }
    Ok(())
}

/// A webhook URL as the egress policy admits it, judged now: an IP address
/// at once, a name on what it resolves to within [`RESOLVE_WITHIN`]. A name
/// that does not resolve is accepted with a warning (the nodes that deliver
/// may see other answers, and every delivery judges its addresses again),
/// except over plain http when the operator allows no network for it.
async fn webhook_url(egress: &Egress, input: &str) -> Result<(String, Vec<Warning>), Invalid> {
    let url = EndpointUrl::parse(input)?;
    let plain = !url.is_https();
    match addresses_now(&url).await {
        Some(addresses) => {
            admit(egress, plain, &addresses)?;
            Ok((url.to_string(), Vec::new()))
        }
        None if plain && !egress.has_allow_list() => Err(plain_http()),
        None => {
            let warning = Warning::new(
                "unresolved",
                format!(
                    "{} does not resolve now; every delivery checks its addresses against the egress policy again",
                    url.host()
                ),
            );
            Ok((url.to_string(), vec![warning]))
        }
    }
}

/// The addresses of the URL's host: an IP address as written, a name as it
/// resolves within [`RESOLVE_WITHIN`]; none when it does not (in time).
async fn addresses_now(url: &EndpointUrl) -> Option<Vec<IpAddr>> {
    let name = match url.host() {
        Host::Ipv4(v4) => return Some(vec![v4.into()]),
        Host::Ipv6(v6) => return Some(vec![v6.into()]),
        Host::Domain(name) => name,
    };
    let port = url.as_url().port_or_known_default().unwrap_or(443);
    let found = tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host((name, port)))
        .await
        .ok()?
        .ok()?;
    let addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    (!addresses.is_empty()).then_some(addresses)
}

/// A new signing secret for webhook `id`, and its sealed form for the store.
fn new_secret(state: &AppState, id: WebhookId) -> (String, String) {
    let secret = generate_secret();
    let sealed = state
        .sealer
        .seal(&Secret::new(secret.clone()), &seal_context(&id.to_string()));
    (secret, sealed)
}

/// Creates a webhook of the tenant with a new secret, and records it in the audit log.
pub async fn create_webhook(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: WebhookBody,
) -> Result<WithSecret, ApiError> {
    let mut check = Check::default();
    let url = match &body.url {
        Some(url) => check.take("url", webhook_url(&state.egress, url).await),
        None => {
            check.fail("url", "is required");
            None
        }
    };
    let events = match &body.events {
        Some(given) => events(&mut check, given),
        None => {
            check.fail("events", "is required");
            None
        }
    };
    check.finish()?;
    let ((url, warnings), events) = (url.expect("checked"), events.expect("checked"));
    let id = WebhookId::new();
    let (secret, sealed_secret) = new_secret(state, id);
    let record = state
        .store
        .create_webhook(NewWebhook {
            id,
            tenant_id: tenant.id,
            url,
            events,
            enabled: body.enabled.unwrap_or(true),
            sealed_secret,
            created_at: now_ms(),
        })
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "webhook.create",
            record.id,
            json!({"url": record.url, "events": record.events, "enabled": record.enabled}),
        )
        .await;
    Ok(WithSecret {
        record,
        secret,
        warnings,
    })
}

/// Changes a webhook's URL, events or state, and records it in the audit log.
pub async fn update_webhook(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: WebhookId,
    body: WebhookBody,
) -> Result<(Webhook, Vec<Warning>), ApiError> {
    let mut check = Check::default();
    let url = match &body.url {
        Some(url) => check.take("url", webhook_url(&state.egress, url).await),
        None => None,
    };
    let events = body.events.as_deref().and_then(|e| events(&mut check, e));
    check.finish()?;
    let (url, warnings) = url.unzip();
    let change = WebhookChange {
        url,
        events,
        enabled: body.enabled,
    };
    let mut details = serde_json::Map::new();
    if let Some(url) = &change.url {
        details.insert("url".into(), json!(url));
    }
    if let Some(events) = change.events {
        details.insert("events".into(), json!(events));
    }
    if let Some(enabled) = change.enabled {
        details.insert("enabled".into(), json!(enabled));
    }
    let record = state
        .store
        .update_webhook(tenant.id, id, change, now_ms())
        .await?;
    caller
        .audit_tenant(state, tenant.id, "webhook.update", id, details.into())
        .await;
    Ok((record, warnings.unwrap_or_default()))
}

/// Deletes a webhook of the tenant: its pending events are never sent.
pub async fn delete_webhook(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: WebhookId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_webhook(tenant.id, id);
    super::audited_removal(state, caller, tenant, "webhook.delete", id, deleted).await
}

/// Gives a webhook a new secret; the previous one keeps signing beside it
/// for the overlap asked for. Recorded in the audit log (never a secret).
pub async fn rotate_webhook_secret(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: WebhookId,
    body: RotateBody,
) -> Result<WithSecret, ApiError> {
    let overlap = body.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if overlap > MAX_OVERLAP_SECONDS {
        let mut check = Check::default();
        check.fail(
            "overlap_seconds",
            &format!("must be 0 to {MAX_OVERLAP_SECONDS} seconds (a week)"),
        );
        check.finish()?;
    }
    let (secret, sealed) = new_secret(state, id);
    let now = now_ms();
    let previous_until = now + i64::from(overlap) * 1000;
    let record = state
        .store
        .rotate_webhook_secret(tenant.id, id, sealed, previous_until, now)
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "webhook.rotate_secret",
            id,
            json!({"previous_secret_until": rfc3339(previous_until)}),
        )
        .await;
    Ok(WithSecret {
        record,
        secret,
        warnings: Vec::new(),
    })
}

/// Sends a test event to a webhook at once, enabled or not, through the
/// node's guarded webhook client, and records its one attempt among the
/// webhook's deliveries.
pub async fn test_webhook(
    state: &AppState,
    tenant: &Tenant,
    id: WebhookId,
) -> Result<WebhookTest, ApiError> {
    let webhook = state.store.webhook(tenant.id, id).await?;
    let now = now_ms();
    let (sealed, previous) = state.store.webhook_secrets(tenant.id, id, now).await?;
    let keys = keys(&state.sealer, id, &sealed, previous.as_deref())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let body = herald_store::event_body(
        TEST_EVENT,
        now,
        &json!({
            "tenant_id": tenant.id,
            "webhook_id": id,
            "message": "a test event from Herald",
        }),
    );
    let event = Event {
        url: &webhook.url,
        id: &event_id,
        body: &body,
    };
    let posted = post(&state.webhook_http, &keys, &event, now / 1000).await;
    state
        .store
        .record_webhook_test(WebhookTestRecord {
            tenant_id: tenant.id,
            webhook: id,
            event_id: event_id.clone(),
            event_type: TEST_EVENT.to_owned(),
            payload: body,
            result: AttemptResult {
                at: now,
                response_status: posted.status,
                error: posted.error.clone(),
                duration_ms: posted.duration_ms,
                next: if posted.delivered {
                    WebhookNext::Delivered
                } else {
                    WebhookNext::GiveUp
                },
            },
        })
        .await?;
    Ok(WebhookTest {
        event_id,
        delivered: posted.delivered,
        response_status: posted.status,
        error: posted.error,
        duration_ms: posted.duration_ms,
    })
}
