//! The webhook dispatcher of one node: claims due events from the outbox,
//! posts each message's events to each webhook in order, and records every
//! attempt, retrying with backoff for a day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::timestamp::now_ms;
use herald_core::{Sealer, WebhookId};
use herald_metrics::Metrics;
use herald_smtp::Egress;
use herald_store::{
    AttemptResult, ClaimedEvent, EventLease, Store, WebhookAttempt, WebhookClaim, WebhookNext,
    WebhookOutcome,
};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::send::{self, Event, Posted};
use super::sign::SigningKey;
use crate::guarded_http::{GuardedHttp, PIPELINED};

/// How many rounds of its requests (one on each of `per_webhook`
/// connections, which its server answers in turn) this node holds for one
/// webhook at most. An endpoint that answers at once drains a
/// round in a moment, and a batch of outcomes writes hundreds of events for
/// it at a time: held here, they are posted without being claimed. One that
/// takes the whole timeout for each holds its events 32 timeouts at most
/// (320 s by default), within their lease.
const ROUNDS_HELD: usize = 32;

/// The least time between two claims while posts are in flight.
const CLAIM_SPACING: Duration = Duration::from_millis(10);

/// How a node's dispatcher behaves.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// This node's name and process id, recorded on leases (as the worker's).
    pub node: String,
    pub incarnation: String,
    /// How long one POST may take, answer included, from its turn on its
    /// connection (the answers before it on the connection came).
    pub timeout: Duration,
    /// Connections this node keeps to one webhook's origin, each carrying
    /// up to [`PIPELINED`] requests in flight.
    pub per_webhook: usize,
    /// Events this node holds claimed at once, over all webhooks.
    pub in_flight: usize,
    /// The waits between attempts; the last one repeats.
    pub retry_delays: Vec<Duration>,
    /// How long after an event it is still retried; then it is given up.
    pub retry_for: Duration,
    /// How long a webhook may fail every attempt before it is disabled.
    pub disable_after: Duration,
    /// How long a claim holds an event before another node may take it.
    pub lease: Duration,
    /// How long delivered and failed events stay listed.
    pub keep: Duration,
    /// How often to look for due events when nothing wakes the dispatcher.
    pub poll: Duration,
    /// Where tenants' endpoints may be.
    pub egress: Arc<Egress>,
    /// Where posts are counted.
    pub metrics: Arc<Metrics>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        WebhookConfig {
            node: "herald".into(),
            incarnation: herald_core::ids::new_incarnation(),
            timeout: s(10),
            per_webhook: 16,
            in_flight: 2048,
            // Close together first (a restart, a deploy), then further apart.
            retry_delays: [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400]
                .into_iter()
                .map(s)
                .collect(),
            retry_for: s(24 * 3_600),
            disable_after: s(24 * 3_600),
            lease: s(600),
            keep: s(7 * 24 * 3_600),
            poll: s(5),
            egress: Arc::default(),
            metrics: Arc::default(),
        }
    }
}

impl WebhookConfig {
    /// What follows a failed attempt at `now` of an event made at
    /// `created_at`, `attempts` attempts in all with this one: a retry, the
    /// last one at the end of `retry_for`, or giving up.
    pub fn after_failure(&self, attempts: u32, created_at: i64, now: i64) -> WebhookNext {
        let last = created_at.saturating_add(millis(self.retry_for));
        if now >= last {
            return WebhookNext::GiveUp;
        }
        let index =
            (attempts.saturating_sub(1) as usize).min(self.retry_delays.len().saturating_sub(1));
        let delay = self.retry_delays.get(index).copied().unwrap_or_default();
        WebhookNext::Retry {
            at: now.saturating_add(millis(delay)).min(last),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What this node holds for one webhook: its claimed events' chains, and the
/// permits that bound its requests in flight.
struct Slot {
    chains: usize,
    permits: Arc<Semaphore>,
}

/// The webhook dispatcher of one node.
#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    http: Arc<GuardedHttp>,
    config: Arc<WebhookConfig>,
    wake: Arc<Notify>,
    slots: Arc<Mutex<HashMap<WebhookId, Slot>>>,
    keys: Arc<Mutex<HashMap<WebhookId, OpenedKeys>>>,
    handoff: Arc<Handoff>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

/// Room of a dispatcher held for the events of outcomes being recorded
/// (see [`Dispatcher::event_room`]); given back when dropped.
pub struct EventRoom {
    dispatcher: Dispatcher,
    lease: EventLease,
}

impl EventRoom {
    /// The lease to record the outcomes with.
    pub fn lease(&self) -> &EventLease {
        &self.lease
    }

    /// Posts the events the store leased under this room's lease, as
    /// claimed ones; the room left over is given back.
    pub fn take(self, handed: Vec<ClaimedEvent>) {
        let handoff = &self.dispatcher.handoff;
        for chain in self.dispatcher.hold(handed) {
            // The loop takes them; a dispatcher that has stopped gives them
            // back (see `run`), or they wait for the node's next start.
            let _ = handoff.chains.send(chain);
        }
    }
}

impl Drop for EventRoom {
    fn drop(&mut self) {
        let handoff = &self.dispatcher.handoff;
        let mut state = handoff.state.lock().expect("handoff lock");
        state.reserved = state.reserved.saturating_sub(self.lease.room);
        drop(state);
        handoff.settled.notify_waiters();
    }
}

/// Events handed over by the worker as its outcomes' commits leased them
/// (see [`Dispatcher::event_room`]).
struct Handoff {
    state: Mutex<HandoffState>,
    /// Told whenever a lease's reservation ends.
    settled: Notify,
    chains: mpsc::UnboundedSender<Chain>,
    /// Taken by [`Dispatcher::run`].
    arrived: Mutex<Option<mpsc::UnboundedReceiver<Chain>>>,
}

#[derive(Default)]
struct HandoffState {
    /// Room promised to leases whose outcomes are being recorded.
    reserved: usize,
    /// The dispatcher is stopping: no more leases.
    closed: bool,
}

/// A webhook's signing keys as opened, with the sealed values they came from:
/// opened again only when those change (a rotation).
struct OpenedKeys {
    sealed: String,
    previous: Option<String>,
    keys: Arc<Result<Vec<SigningKey>, String>>,
}

/// The most webhooks whose opened keys are kept; past it the cache starts afresh.
const KEPT_KEYS: usize = 10_000;

/// A webhook's claimed events of one message, in order.
type Chain = Vec<ClaimedEvent>;

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>, config: WebhookConfig) -> Self {
        let http =
            GuardedHttp::for_webhooks(config.egress.clone(), config.timeout, config.per_webhook);
        let (chains, arrived) = mpsc::unbounded_channel();
        Dispatcher {
            store,
            sealer,
            http: Arc::new(http),
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
            slots: Arc::default(),
            keys: Arc::default(),
            handoff: Arc::new(Handoff {
                state: Mutex::default(),
                settled: Notify::new(),
                chains,
                arrived: Mutex::new(Some(arrived)),
            }),
        }
    }

    /// Room for the events that outcomes about to be recorded will write,
    /// so that the store leases them to this dispatcher in the same commit
    /// ([`herald_store::DeliveryStore::complete_and_lease_events`] with
    /// [`EventRoom::lease`]): no claim, no wait for one. `None` while it has
    /// no room, or is stopping. Up to half its room goes to one lease; the
    /// rest stays for claims (retries, and events other nodes' outcomes
    /// wrote). The room is held until the [`EventRoom`] is taken or dropped.
    pub fn event_room(&self) -> Option<EventRoom> {
        let mut state = self.handoff.state.lock().expect("handoff lock");
        if state.closed {
            return None;
        }
        let free = self
            .config
            .in_flight
            .saturating_sub(self.claimed() + state.reserved);
        let room = free.min(self.config.in_flight / 2);
        if room == 0 {
            return None;
        }
        state.reserved += room;
        let now = now_ms();
        Some(EventRoom {
            dispatcher: self.clone(),
            lease: EventLease {
                node: self.config.node.clone(),
                incarnation: self.config.incarnation.clone(),
                now,
                until: now + millis(self.config.lease),
                room,
                exclude: self.full_webhooks(),
            },
        })
    }

    /// A handle that makes the dispatcher look for events at once (after outcomes were recorded).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The HTTP client webhooks are posted with (the API's test events use it too).
    pub fn http(&self) -> Arc<GuardedHttp> {
        self.http.clone()
    }

    /// Runs until `shutdown` turns true, then gives the posts in flight one
    /// timeout to end and records them. Events still waiting for their turn
    /// then stay leased to this process: the node gives them back when it
    /// starts again (another node takes them when the lease ends).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut arrived = self
            .handoff
            .arrived
            .lock()
            .expect("handoff lock")
            .take()
            .expect("a dispatcher runs once");
        let (finished, results) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record_all(results));
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut turn = ClaimTurn::default();
        let mut last_prune = 0;
        // True when the latest claim found nothing due.
        let mut found_nothing = false;
        let mut last_claim = tokio::time::Instant::now() - CLAIM_SPACING;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let reserved = self.handoff.state.lock().expect("handoff lock").reserved;
            let room = self
                .config
                .in_flight
                .saturating_sub(self.claimed() + reserved);
            // While posts are in flight, not sooner than CLAIM_SPACING after
            // the last claim, so that outcomes committed one after another
            // make one claim.
            let spaced = in_flight.is_empty() || last_claim.elapsed() >= CLAIM_SPACING;
            if turn.claims(room, self.config.in_flight, spaced) {
                last_claim = tokio::time::Instant::now();
                match self.claim(room).await {
                    Ok((chains, passed_over)) => {
                        found_nothing = chains.is_empty();
                        let taken = chains.iter().map(Vec::len).sum::<usize>();
                        turn.claimed(taken, room, passed_over);
                        for chain in chains {
                            in_flight
                                .spawn(Box::pin(self.clone().deliver(chain, finished.clone())));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook events failed"),
                }
            }
            let now = now_ms();
            if now - last_prune > 3_600_000 {
                last_prune = now;
                self.prune(now).await;
            }
            // While posts are in flight, each one's end wakes the loop.
            let pause = if in_flight.is_empty() {
                self.pause(found_nothing).await
            } else if turn.kicked {
                CLAIM_SPACING.saturating_sub(last_claim.elapsed())
            } else {
                self.config.poll
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.wake.notified() => turn.woken(),
                Some(chain) = arrived.recv() => {
                    in_flight.spawn(Box::pin(self.clone().deliver(chain, finished.clone())));
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(pause) => turn.woken(),
            }
        }
        let grace = self.config.timeout + Duration::from_secs(1);
        // No more leases; those being recorded end, and what they leased
        // here is given back, due at once, for the next start or another node.
        self.handoff.state.lock().expect("handoff lock").closed = true;
        let _ = tokio::time::timeout(grace, async {
            loop {
                let settled = self.handoff.settled.notified();
                if self.handoff.state.lock().expect("handoff lock").reserved == 0 {
                    break;
                }
                settled.await;
            }
        })
        .await;
        arrived.close();
        let now = now_ms();
        while let Ok(chain) = arrived.try_recv() {
            let back = chain
                .iter()
                .map(|e| attempt(e, WebhookOutcome::GivenBack { due_at: now }))
                .collect();
            let _ = finished.send(back);
        }
        let ended = tokio::time::timeout(grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            in_flight.abort_all();
            tracing::info!(
                "webhook events still waiting at shutdown are posted after the next start"
            );
        }
        drop(finished);
        let _ = recorder.await;
    }

    /// How many events' chains this node holds claimed.
    fn claimed(&self) -> usize {
        let slots = self.slots.lock().expect("slots lock");
        slots.values().map(|s| s.chains).sum()
    }

    /// How long to wait for a wake-up: until the earliest event is due, at
    /// most `poll`. An event due that the latest claim passed over waits
    /// behind an earlier one of its message: then a second.
    async fn pause(&self, found_nothing: bool) -> Duration {
        let poll = self.config.poll;
        match self.store.next_webhook_due().await {
            Ok(Some(due)) => {
                let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
                let least = if found_nothing {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(10)
                };
                wait.clamp(least.min(poll), poll)
            }
            _ => poll,
        }
    }

    /// Claims due events for webhooks with room and groups them into
    /// chains; true beside them when a full webhook was passed over.
    async fn claim(&self, room: usize) -> herald_store::Result<(Vec<Chain>, bool)> {
        let exclude = self.full_webhooks();
        let passed_over = !exclude.is_empty();
        let now = now_ms();
        let claimed = self
            .store
            .claim_webhook_events(WebhookClaim {
                node: self.config.node.clone(),
                incarnation: self.config.incarnation.clone(),
                now,
                lease_until: now + millis(self.config.lease),
                limit: u32::try_from(room).unwrap_or(u32::MAX),
                exclude,
            })
            .await?;
        Ok((self.hold(claimed), passed_over))
    }

    /// The webhooks with [`ROUNDS_HELD`] rounds of their requests held here
    /// already: no more, so that one slow endpoint holds neither the room
    /// nor its leases long.
    fn full_webhooks(&self) -> Vec<WebhookId> {
        let most = self.config.per_webhook * ROUNDS_HELD;
        let slots = self.slots.lock().expect("slots lock");
        slots
            .iter()
            .filter(|(_, s)| s.chains >= most)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Groups leased events into chains (a webhook's events of one message,
    /// in order) and counts them as held by this dispatcher.
    fn hold(&self, claimed: Vec<ClaimedEvent>) -> Vec<Chain> {
        let mut chains: Vec<Chain> = Vec::new();
        let mut index: HashMap<(WebhookId, Option<herald_core::MessageId>), usize> = HashMap::new();
        for event in claimed {
            let key = (event.webhook, event.message_id);
            match index.get(&key) {
                Some(&i) if event.message_id.is_some() => chains[i].push(event),
                _ => {
                    index.insert(key, chains.len());
                    chains.push(vec![event]);
                }
            }
        }
        let mut slots = self.slots.lock().expect("slots lock");
        for chain in &chains {
            slots
                .entry(chain[0].webhook)
                .or_insert_with(|| Slot {
                    chains: 0,
                    permits: Arc::new(Semaphore::new(self.config.per_webhook.max(1) * PIPELINED)),
                })
                .chains += 1;
        }
        chains
    }

    /// Posts a chain's events in order; after a failure the rest wait for
    /// the failed event's retry, unattempted. Spawned boxed, as the worker's
    /// deliveries are: its state is large.
    async fn deliver(self, chain: Chain, finished: mpsc::UnboundedSender<Vec<WebhookAttempt>>) {
        let webhook = chain[0].webhook;
        let permits = {
            let slots = self.slots.lock().expect("slots lock");
            slots[&webhook].permits.clone()
        };
        let mut attempts = Vec::with_capacity(chain.len());
        {
            let _permit = permits.acquire().await.expect("never closed");
            let keys = self.keys_of(&chain[0]);
            let mut held_back: Option<i64> = None;
            for event in &chain {
                if let Some(due_at) = held_back {
                    attempts.push(attempt(event, WebhookOutcome::GivenBack { due_at }));
                    continue;
                }
                let at = now_ms();
                let posted = match keys.as_ref() {
                    Ok(keys) => {
                        let e = Event {
                            url: &event.url,
                            id: &event.event_id,
                            body: &event.payload,
                        };
                        send::post(&self.http, keys, &e, at / 1_000).await
                    }
                    Err(why) => Posted {
                        delivered: false,
                        status: None,
                        error: Some(why.clone()),
                        duration_ms: 0,
                    },
                };
                self.config
                    .metrics
                    .webhook_posted(posted.delivered, posted.duration_ms as f64 / 1000.0);
                let next = if posted.delivered {
                    WebhookNext::Delivered
                } else {
                    self.config
                        .after_failure(event.attempts + 1, event.created_at, now_ms())
                };
                match next {
                    WebhookNext::Retry { at } => held_back = Some(at),
                    WebhookNext::GiveUp => held_back = None,
                    WebhookNext::Delivered => {}
                }
                if !posted.delivered {
                    tracing::info!(
                        tenant = %event.tenant_id,
                        webhook = %webhook,
                        event = %event.event_id,
                        status = posted.status,
                        error = posted.error.as_deref().unwrap_or(""),
                        "webhook attempt failed"
                    );
                }
                attempts.push(attempt(
                    event,
                    WebhookOutcome::Attempted(AttemptResult {
                        at,
                        response_status: posted.status,
                        error: posted.error,
                        duration_ms: posted.duration_ms,
                        next,
                    }),
                ));
            }
        }
        let _ = finished.send(attempts);
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(slot) = slots.get_mut(&webhook) {
            slot.chains -= 1;
            if slot.chains == 0 {
                slots.remove(&webhook);
            }
        }
    }

    /// The signing keys of `event`'s webhook, opened once per secret.
    fn keys_of(&self, event: &ClaimedEvent) -> Arc<Result<Vec<SigningKey>, String>> {
        let mut cache = self.keys.lock().expect("keys lock");
        if let Some(opened) = cache.get(&event.webhook)
            && opened.sealed == event.sealed_secret
            && opened.previous == event.previous_sealed_secret
        {
            return opened.keys.clone();
        }
        let keys = Arc::new(send::keys(
            &self.sealer,
            event.webhook,
            &event.sealed_secret,
            event.previous_sealed_secret.as_deref(),
        ));
        if cache.len() >= KEPT_KEYS {
            cache.clear();
        }
        cache.insert(
            event.webhook,
            OpenedKeys {
                sealed: event.sealed_secret.clone(),
                previous: event.previous_sealed_secret.clone(),
                keys: keys.clone(),
            },
        );
        keys
    }

    /// Records attempts in batches: whatever gathered during the previous commit.
    async fn record_all(self, mut results: mpsc::UnboundedReceiver<Vec<WebhookAttempt>>) {
        while let Some(first) = results.recv().await {
            let mut batch = first;
            while let Ok(more) = results.try_recv() {
                batch.extend(more);
            }
            let cut_off = now_ms() - millis(self.config.disable_after);
            loop {
                match self
                    .store
                    .finish_webhook_events(batch.clone(), cut_off)
                    .await
                {
                    Ok(disabled) => {
                        for d in disabled {
                            tracing::warn!(
                                tenant = %d.tenant_id,
                                webhook = %d.id,
                                "webhook disabled: every attempt failed since {}",
                                herald_core::timestamp::rfc3339(d.failing_since)
                            );
                        }
                        break;
                    }
                    // Unrecorded, the events are posted again once their
                    // leases end: at least once, never lost.
                    Err(e) if results.is_closed() => {
                        tracing::warn!(error = %e, "webhook attempts not recorded at shutdown");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "recording webhook attempts failed; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    async fn prune(&self, now: i64) {
        match self
            .store
            .prune_webhook_events(now - millis(self.config.keep))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "forgot old webhook events"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
        }
    }
}

/// When the dispatcher's loop claims: one claim costs a write, so one is
/// made when the loop was woken (outcomes recorded, the pause for the next
/// due event or the poll ran out) or a full claim may have left events
/// behind, and otherwise once half the room is free, unless the latest
/// claim found nothing and passed over no webhook: then nothing is left
/// to claim until the loop is woken.
#[derive(Debug)]
struct ClaimTurn {
    kicked: bool,
    drained: bool,
}

impl Default for ClaimTurn {
    /// The first turn claims.
    fn default() -> Self {
        ClaimTurn {
            kicked: true,
            drained: false,
        }
    }
}

impl ClaimTurn {
    /// Whether to claim now, with `room` of `in_flight` free; `spaced` when
    /// the previous claim is far enough behind.
    fn claims(&mut self, room: usize, in_flight: usize, spaced: bool) -> bool {
        let half_free = room >= in_flight / 2 && !self.drained;
        let claims = room > 0 && ((self.kicked && spaced) || half_free);
        if claims {
            self.kicked = false;
        }
        claims
    }

    /// A claim with `room` took `taken` events; `passed_over` when full
    /// webhooks were left out of it.
    fn claimed(&mut self, taken: usize, room: usize, passed_over: bool) {
        self.drained = taken == 0 && !passed_over;
        // A full claim may have left more behind.
        self.kicked = taken >= room;
    }

    fn woken(&mut self) {
        self.kicked = true;
        self.drained = false;
    }
}

fn attempt(event: &ClaimedEvent, outcome: WebhookOutcome) -> WebhookAttempt {
    WebhookAttempt {
        seq: event.seq,
        lease_token: event.lease_token,
        webhook: event.webhook,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn event_rooms_share_the_room_with_claims_and_end_when_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let store = herald_store::SqliteStore::open(&dir.path().join("herald.db")).unwrap();
        let dispatcher = Dispatcher::new(
            Arc::new(store),
            Arc::new(Sealer::new(&Sealer::generate_key())),
            WebhookConfig {
                in_flight: 100,
                ..WebhookConfig::default()
            },
        );
        // Half the room at most, then what is left of it.
        let first = dispatcher.event_room().unwrap();
        assert_eq!(first.lease().room, 50);
        let second = dispatcher.event_room().unwrap();
        assert_eq!(second.lease().room, 50);
        assert!(dispatcher.event_room().is_none(), "no room left");
        // Taken or dropped, a room is given back.
        first.take(Vec::new());
        drop(second);
        let third = dispatcher.event_room().unwrap();
        assert_eq!(third.lease().room, 50);
        drop(third);
        dispatcher.handoff.state.lock().unwrap().closed = true;
        assert!(dispatcher.event_room().is_none(), "stopping");
    }

    #[test]
    fn an_empty_claim_ends_the_claims_for_free_room_until_the_loop_is_woken() {
        let mut turn = ClaimTurn::default();
        assert!(turn.claims(100, 100, true), "the first turn claims");
        turn.claimed(0, 100, false);
        // Posts handed over end one after another: no claim for each.
        assert!(!turn.claims(100, 100, true));
        assert!(!turn.claims(60, 100, true));
        turn.woken();
        assert!(!turn.claims(40, 100, false), "not sooner than the spacing");
        assert!(turn.claims(40, 100, true), "woken");
        // Something found: half the room free claims again.
        turn.claimed(10, 40, false);
        assert!(turn.claims(50, 100, false));
        assert!(!turn.claims(0, 100, true), "no room");
    }

    #[test]
    fn a_claim_that_passed_over_a_full_webhook_claims_again_when_room_frees() {
        let mut turn = ClaimTurn::default();
        assert!(turn.claims(80, 100, true));
        turn.claimed(0, 80, true);
        assert!(!turn.claims(40, 100, false), "under half the room");
        assert!(turn.claims(50, 100, false), "its events may be left");
        // A full claim may have left more: the next spaced turn claims.
        turn.claimed(50, 50, false);
        assert!(!turn.claims(10, 100, false));
        assert!(turn.claims(10, 100, true));
    }

    #[test]
    fn failures_back_off_and_end_a_day_after_the_event() {
        let config = WebhookConfig::default();
        let hour = 3_600_000;
        assert_eq!(
            config.after_failure(1, 0, 1_000),
            WebhookNext::Retry { at: 6_000 }
        );
        assert_eq!(
            config.after_failure(50, 0, hour),
            WebhookNext::Retry { at: 5 * hour }
        );
        // The last retry is at the end of the day, not past it.
        assert_eq!(
            config.after_failure(50, 0, 23 * hour),
            WebhookNext::Retry { at: 24 * hour }
        );
        assert_eq!(config.after_failure(51, 0, 24 * hour), WebhookNext::GiveUp);
    }
}
