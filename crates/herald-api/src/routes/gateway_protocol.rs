//! The routes a gateway calls with its own token (`hrldg_…`): claim the
//! tenant's mail pinned to it (a long poll), report outcomes, give claims
//! back. See `herald_delivery::gateway::wire` for the JSON.
//!
//! Only a gateway token opens these routes, and a gateway token opens no
//! other ([`crate::auth::Caller`] knows API tokens only). A claim sends the
//! mail's content and its route's credentials only for a route still
//! pinned to this gateway; the account's secret is re-sealed under a key the
//! instance sent with the claim, so it travels sealed and is opened only by
//! that instance's worker, at the send, as a node's worker opens it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use herald_core::timestamp::now_ms;
use herald_core::{
    GatewayId, Invalid, MessageId, ProviderId, RecipientId, Sealer, TenantId, token,
};
use herald_delivery::gateway::wire::{
    ClaimAnswer, ClaimBody, MAX_CLAIM, MAX_WAIT_SECONDS, OutcomesAnswer, OutcomesBody, ReleaseBody,
    WireClaimed, WireError, WireMessage, WireProvider, WireProviderConfig,
};
use herald_store::{
    Claimed, DeliveryStore, Gateway, GatewayClaim, GatewaySeen, MessageContent, NextState, Outcome,
    ProviderConfig, StoreError, gateway_lease_owner,
};
use serde_json::{Value, json};
use tracing::warn;

use super::{Check, name};
use crate::body::Body;
use crate::client::client_ip;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(claim, outcomes, release))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/gateway/claim", post(claim))
        .route("/v1/gateway/outcomes", post(outcomes))
        .route("/v1/gateway/release", post(release))
}

/// How often a waiting claim looks again without being woken: mail may
/// arrive through another node, or be handed over by a worker.
const RECHECK: Duration = Duration::from_secs(1);

/// The longest a waiting claim goes without recording its instance as seen
/// again (less when a third of the node's `alive_within` is shorter).
const RESEEN_AT_MOST: Duration = Duration::from_secs(5);

/// Records that the claiming instance reported; a gateway deleted since its
/// token was read is unauthorised.
async fn record_seen(state: &AppState, seen: &GatewaySeen) -> Result<(), ApiError> {
    match state.store.gateway_seen(seen.clone()).await {
        Err(StoreError::NotFound) => Err(ApiError::Unauthorized),
        other => Ok(other?),
    }
}

/// The most claims of one gateway that may wait at a node at once. A
/// gateway process keeps one claim waiting; this leaves room for many
/// instances, and bounds what one token can make a node hold (each waiting
/// claim looks again whenever any tenant's mail arrives).
pub const MAX_WAITING_CLAIMS: usize = 16;

/// How many claims of each gateway are waiting at this node.
#[derive(Debug, Default)]
pub struct WaitingClaims(std::sync::Mutex<HashMap<GatewayId, usize>>);

impl WaitingClaims {
    /// A place for one more waiting claim of `gateway`, held until the
    /// guard is dropped; `None` when it has [`MAX_WAITING_CLAIMS`] already.
    fn enter(self: &Arc<Self>, gateway: GatewayId) -> Option<Waiting> {
        let mut counts = self.0.lock().expect("not poisoned");
        let count = counts.entry(gateway).or_default();
        if *count >= MAX_WAITING_CLAIMS {
            return None;
        }
        *count += 1;
        Some(Waiting {
            claims: self.clone(),
            gateway,
        })
    }
}

/// One waiting claim's place, given back when dropped.
struct Waiting {
    claims: Arc<WaitingClaims>,
    gateway: GatewayId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut counts = self.claims.0.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&self.gateway) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.gateway);
            }
        }
    }
}

/// A caller holding a gateway's token: the gateway, and the address it
/// called from.
pub struct GatewayCaller {
    pub gateway: Gateway,
    /// Where it called from: the connection's peer, or the client a
    /// trusted proxy forwarded.
    pub remote: IpAddr,
    /// The token's hash, to check again during a long wait.
    token_hash: String,
}

impl FromRequestParts<AppState> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = crate::auth::bearer_token(parts)
            .filter(|t| t.starts_with(token::GATEWAY_TOKEN_PREFIX))
            .ok_or(ApiError::Unauthorized)?;
        let token_hash = token::hash(presented);
        let gateway = state
            .store
            .gateway_by_token(&token_hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let remote = client_ip(peer, &parts.headers, &state.trusted_proxies);
        Ok(GatewayCaller {
            gateway,
            remote,
            token_hash,
        })
    }
}

fn wire_error(e: WireError) -> ApiError {
    ApiError::field(Invalid::new(e.rule).at(e.field))
}

/// Refuses recipients not pinned to the caller's gateway (another
/// tenant's, a node's, another gateway's): `field` names the list.
async fn check_pinned(
    state: &AppState,
    gateway: &Gateway,
    field: &str,
    ids: &[RecipientId],
) -> Result<(), ApiError> {
    let pinned = state.store.pinned_to_gateway(gateway.id, ids).await?;
    let mut check = Check::default();
    for (index, ok) in pinned.iter().enumerate() {
        if !ok {
            check.fail(
                &format!("{field}[{index}].recipient"),
                "is not a recipient pinned to this gateway",
            );
        }
    }
    check.finish()
}

/// Claims due mail pinned to the calling gateway, waiting up to
/// `wait_seconds` for some; answers its messages and provider
/// configurations, with accounts' secrets sealed under the claim's `key`.
#[utoipa::path(post, path = "/v1/gateway/claim", tag = "gateways",
    request_body(content = Object, description = "`{instance, version, incarnation, limit (1 to 256; 0 claims nothing and answers at once: a report that the instance is alive), wait_seconds (0 to 25, default 25), key (base64 of 32 random bytes)}`"),
    responses((status = 200, description = "`{lease_ms, now, recipients, messages, providers: [{test_provider, config}]}`; no recipients when none came due in time", body = Object)))]
async fn claim(
    State(state): State<AppState>,
    caller: GatewayCaller,
    body: Body<ClaimBody>,
) -> Result<Json<ClaimAnswer>, ApiError> {
    let body = body.parse()?;
    let mut check = Check::default();
    let instance = check.take("instance", name(&body.instance));
    check.take("version", name(&body.version));
    check.take("incarnation", name(&body.incarnation));
    if body.limit > MAX_CLAIM {
        check.fail("limit", "must be from 0 to 256");
    }
    if body.wait_seconds > MAX_WAIT_SECONDS {
        check.fail("wait_seconds", "must be from 0 to 25");
    }
    let key = match body.key() {
        Ok(key) => Some(key),
        Err(e) => {
            check.fail("key", &e.rule);
            None
        }
    };
    check.finish()?;
    let (Some(instance), Some(key)) = (instance, key) else {
        unreachable!("checked above")
    };
    let token_hash = caller.token_hash;
    let gateway = caller.gateway;
    let seen = GatewaySeen {
        gateway_id: gateway.id,
        name: instance.clone(),
        version: body.version.trim().to_owned(),
        address: caller.remote.to_string(),
        at: now_ms(),
        incarnation: body.incarnation.trim().to_owned(),
    };
    // A claim that would wait holds one of its gateway's places meanwhile
    // (taken before the instance is recorded as seen).
    let _waiting = match (body.limit, body.wait_seconds) {
        (0, _) | (_, 0) => None,
        _ => Some(state.waiting_claims.enter(gateway.id).ok_or(
            ApiError::TooManyWaitingClaims {
                limit: MAX_WAITING_CLAIMS,
            },
        )?),
    };
    record_seen(&state, &seen).await?;
    if body.limit == 0 {
        // A report that the instance is alive (its delivery slots may all be
        // taken): it claims nothing.
        return Ok(Json(ClaimAnswer {
            lease_ms: state.gateway_lease.as_millis() as i64,
            now: now_ms(),
            ..ClaimAnswer::default()
        }));
    }
    // Seen again while the claim waits and when it answers, so that an idle
    // instance, whose claims wait up to 25 s, never looks dead: at most a
    // third of the period after which an instance counts as dead.
    let reseen_every = (state.alive_within / 3).min(RESEEN_AT_MOST);
    let seen_now = || GatewaySeen {
        at: now_ms(),
        ..seen.clone()
    };
    let mut last_seen = tokio::time::Instant::now();
    let lease_ms = state.gateway_lease.as_millis() as i64;
    let request = |now| GatewayClaim {
        gateway: gateway.id,
        tenant: gateway.tenant_id,
        owner: gateway_lease_owner(&gateway.name, &instance),
        incarnation: body.incarnation.clone(),
        now,
        lease_ms,
        limit: body.limit,
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(body.wait_seconds.into());
    let mut stopping = state.stopping.clone();
    let mut stopped = false;
    let mut first = true;
    loop {
        // Listening before the claim: mail stored while it runs still wakes us.
        let arrived = state.mail_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        // A token replaced (or a gateway deleted) while the claim waits
        // stops it at once: nothing more is claimed with the old token.
        if !std::mem::take(&mut first) {
            let current = state.store.gateway_by_token(&token_hash).await?;
            if current.is_none_or(|g| g.id != gateway.id) {
                return Err(ApiError::Unauthorized);
            }
        }
        if last_seen.elapsed() >= reseen_every {
            record_seen(&state, &seen_now()).await?;
            last_seen = tokio::time::Instant::now();
        }
        let claimed = state.store.claim_for_gateway(request(now_ms())).await?;
        if !claimed.is_empty() {
            let answer = answer(&state, &gateway, claimed, &key).await?;
            if !answer.recipients.is_empty() {
                record_seen(&state, &seen_now()).await?;
                return Ok(Json(ClaimAnswer {
                    lease_ms,
                    now: now_ms(),
                    ..answer
                }));
            }
            // All of it was handed back: look again, the wait is not over.
            continue;
        }
        let now = tokio::time::Instant::now();
        if now >= until || stopped || *stopping.borrow() {
            record_seen(&state, &seen_now()).await?;
            return Ok(Json(ClaimAnswer {
                lease_ms,
                now: now_ms(),
                ..ClaimAnswer::default()
            }));
        }
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep((until - now).min(RECHECK).min(reseen_every)) => {}
            // A node whose stop signal is gone is stopping too.
            changed = stopping.changed() => stopped |= changed.is_err(),
        }
    }
}

/// The answer for claimed recipients: those whose route is still pinned to
/// `gateway`, with their messages and configurations. The others are handed
/// back to the nodes unsent; nothing of theirs is answered.
async fn answer(
    state: &AppState,
    gateway: &Gateway,
    claimed: Vec<Claimed>,
    key: &[u8; Sealer::KEY_LEN],
) -> Result<ClaimAnswer, ApiError> {
    let ids: Vec<MessageId> = claimed
        .iter()
        .map(|c| c.message)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let contents: HashMap<MessageId, MessageContent> = state
        .store
        .message_contents(&ids)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    // Read from the store now, not from a cache: a route moved away from
    // this gateway must not send its mail here, even for a moment.
    let mut configs: HashMap<Option<ProviderId>, Option<ProviderConfig>> = HashMap::new();
    let wanted: HashSet<Option<ProviderId>> = contents.values().map(|m| m.test_provider).collect();
    for key in wanted {
        configs.insert(key, load(state, gateway.tenant_id, key).await?);
    }
    let here = |config: &Option<ProviderConfig>| {
        config
            .as_ref()
            .is_some_and(|c| c.server.settings.gateway_id == Some(gateway.id))
    };
    let (mine, elsewhere): (Vec<Claimed>, Vec<Claimed>) = claimed.into_iter().partition(|c| {
        contents
            .get(&c.message)
            .is_some_and(|m| configs.get(&m.test_provider).is_some_and(here))
    });
    if !elsewhere.is_empty() {
        let leases = elsewhere
            .iter()
            .map(|c| (c.recipient, c.lease_token))
            .collect();
        let handed = state.store.repin(leases, None, now_ms()).await?;
        tracing::info!(gateway = %gateway.id, recipients = handed, "recipients whose route is no longer pinned to their gateway go back to the nodes");
    }
    let sealer = Sealer::new(key);
    let mut messages = Vec::new();
    let mut used = HashSet::new();
    for id in mine.iter().map(|c| c.message).collect::<HashSet<_>>() {
        let message = &contents[&id];
        used.insert(message.test_provider);
        messages.push(WireMessage::from(message));
    }
    let providers = used
        .into_iter()
        .map(|test_provider| {
            let config = configs[&test_provider]
                .as_ref()
                .expect("only mail with a configuration is answered");
            WireProvider {
                test_provider,
                config: resealed(state, &sealer, config),
            }
        })
        .collect();
    Ok(ClaimAnswer {
        lease_ms: 0,
        now: 0,
        recipients: mine.iter().map(WireClaimed::from).collect(),
        messages,
        providers,
    })
}

/// A test message's provider, or the tenant's active one (`None`: the
/// system default). A test provider deleted since goes to the nodes, whose
/// attempt says so.
async fn load(
    state: &AppState,
    tenant: TenantId,
    test_provider: Option<ProviderId>,
) -> Result<Option<ProviderConfig>, ApiError> {
    match test_provider {
        Some(provider) => {
            match DeliveryStore::provider_config(&*state.store, tenant, provider).await {
                Err(StoreError::NotFound) => Ok(None),
                other => Ok(Some(other?)),
            }
        }
        None => Ok(state.store.active_provider(tenant).await?),
    }
}

/// The configuration with the account's secret sealed under the
/// instance's key, for the same context, so the gateway's worker opens it
/// as a node's worker opens the stored one.
fn resealed(state: &AppState, sealer: &Sealer, config: &ProviderConfig) -> WireProviderConfig {
    let mut wire = WireProviderConfig::from(config);
    if let Some(account) = &mut wire.account
        && let Some(sealed) = &account.sealed_secret
    {
        let context = account.id.to_string();
        match state.sealer.open(sealed, &context) {
            Ok(secret) => account.sealed_secret = Some(sealer.seal(&secret, &context)),
            Err(error) => {
                // Left as stored: the gateway cannot open it either, and its
                // attempt says the secret could not be opened, as a node's would.
                warn!(%error, account_id = %account.id, "an account's secret could not be opened for a gateway");
            }
        }
    }
    wire
}

/// Records the outcomes of the calling gateway's attempts; each is
/// accepted only while its lease is current.
#[utoipa::path(post, path = "/v1/gateway/outcomes", tag = "gateways",
    request_body(content = Object, description = "`{instance, outcomes: [{recipient, lease_token, next, attempt}]}`"),
    responses((status = 200, description = "`{accepted: [bool]}`, one per outcome in order", body = Object)))]
async fn outcomes(
    State(state): State<AppState>,
    caller: GatewayCaller,
    body: Body<OutcomesBody>,
) -> Result<Json<OutcomesAnswer>, ApiError> {
    let body = body.parse()?;
    let gateway = caller.gateway;
    let instance = name(&body.instance).map_err(|e| ApiError::field(e.at("instance")))?;
    let outcomes: Vec<Outcome> = body
        .outcomes
        .into_iter()
        .map(Outcome::try_from)
        .collect::<Result<_, _>>()
        .map_err(wire_error)?;
    let bounds = AttemptBounds {
        node: format!("gw:{instance}"),
        now: now_ms(),
        lease_ms: state.gateway_lease.as_millis() as i64,
        longest_deferral_ms: state.gateway_longest_deferral.as_millis() as i64,
    };
    let mut check = Check::default();
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| bounds.made_sane(index, outcome, &mut check))
        .collect();
    check.finish()?;
    let ids: Vec<RecipientId> = outcomes.iter().map(|o| o.recipient).collect();
    check_pinned(&state, &gateway, "outcomes", &ids).await?;
    let kinds: Vec<NextState> = outcomes.iter().map(|o| o.next).collect();
    let completed = state.store.complete(outcomes, Vec::new()).await?;
    if completed.events > 0 {
        state.events_written.notify_one();
    }
    let accepted = completed.accepted;
    let counted = |want: fn(&NextState) -> bool| {
        kinds
            .iter()
            .zip(&accepted)
            .filter(|(next, ok)| **ok && want(next))
            .count() as u32
    };
    let delivered = counted(|n| matches!(n, NextState::Sent));
    let failed = counted(|n| matches!(n, NextState::Failed));
    if delivered + failed > 0 {
        if let Err(error) = state
            .store
            .count_gateway_outcomes(gateway.id, &instance, delivered, failed, now_ms())
            .await
        {
            warn!(%error, gateway = %gateway.id, %instance, "could not count a gateway's outcomes");
        }
    }
    Ok(Json(OutcomesAnswer { accepted }))
}

/// The longest a name-like field of a gateway's attempt record may be (a
/// server's `host:port`, a step, a TLS cipher, an address, …), in characters.
const MAX_ATTEMPT_NAME: usize = 300;

/// The largest diagnosis of a gateway's attempt, as JSON: a test message's
/// session, every reply at most [`herald_smtp::MAX_REPLY_BYTES`].
const MAX_DIAGNOSIS_BYTES: usize = 4 * herald_smtp::MAX_REPLY_BYTES;

/// What a gateway's attempt record may say, decided by the node: the
/// gateway reports an attempt, it does not write the record as it likes.
struct AttemptBounds {
    /// `gw:<instance>`, the name the gateway's own worker uses too.
    node: String,
    now: i64,
    lease_ms: i64,
    longest_deferral_ms: i64,
}

impl AttemptBounds {
    /// The outcome with its attempt made sane: the node named by the node,
    /// the time within the lease that could have covered it (up to a
    /// minute of clock difference) and not in the future, the duration
    /// within a lease, a deferral from now to at most the node's longest
    /// (not in the past: that would have it claimed again at once, over and
    /// over), the server's response cut at the SMTP client's own bound of a
    /// reply. A name-like field too long, or a diagnosis too
    /// large, cannot be made sane: `check` names it.
    fn made_sane(&self, index: usize, mut outcome: Outcome, check: &mut Check) -> Outcome {
        if let NextState::Deferred { until } = &mut outcome.next {
            *until = (*until).clamp(self.now, self.now.saturating_add(self.longest_deferral_ms));
        }
        let a = &mut outcome.attempt;
        a.node = self.node.clone();
        a.at = a.at.clamp(self.now - self.lease_ms - 60_000, self.now);
        a.duration_ms = a.duration_ms.clamp(0, self.lease_ms);
        if a.response.len() > herald_smtp::MAX_REPLY_BYTES {
            let mut end = herald_smtp::MAX_REPLY_BYTES;
            while !a.response.is_char_boundary(end) {
                end -= 1;
            }
            a.response.truncate(end);
        }
        let field = |name: &str| format!("outcomes[{index}].attempt.{name}");
        let names = [
            ("server", Some(&a.server)),
            ("step", a.step.as_ref()),
            ("enhanced_code", a.enhanced_code.as_ref()),
            ("remote_addr", a.remote_addr.as_ref()),
            ("tls_version", a.tls_version.as_ref()),
            ("tls_cipher", a.tls_cipher.as_ref()),
            ("sender_policy", a.sender_policy.as_ref()),
        ];
        for (name, value) in names {
            if value.is_some_and(|v| v.chars().count() > MAX_ATTEMPT_NAME) {
                check.fail(&field(name), "must be at most 300 characters");
            }
        }
        if a.diagnosis
            .as_ref()
            .is_some_and(|d| d.to_string().len() > MAX_DIAGNOSIS_BYTES)
        {
            check.fail(&field("diagnosis"), "is too large");
        }
        outcome
    }
}

/// Gives claimed recipients back unsent (an instance stopping).
#[utoipa::path(post, path = "/v1/gateway/release", tag = "gateways",
    request_body(content = Object, description = "`{instance, leases: [{recipient, lease_token}]}`"),
    responses((status = 200, description = "`{released}`: how many leases were given", body = Object)))]
async fn release(
    State(state): State<AppState>,
    caller: GatewayCaller,
    body: Body<ReleaseBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.parse()?;
    let ids: Vec<RecipientId> = body.leases.iter().map(|l| l.recipient).collect();
    check_pinned(&state, &caller.gateway, "leases", &ids).await?;
    let count = body.leases.len();
    let leases = body
        .leases
        .into_iter()
        .map(|l| (l.recipient, l.lease_token))
        .collect();
    state.store.release(leases).await?;
    Ok(Json(json!({"released": count})))
}
