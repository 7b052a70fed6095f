//! The delivery loop of a node: claim due recipients under a lease, within
//! each tenant's room, hand each message to a task that sends it (`send`),
//! and record every attempt, fenced by the lease; `outcome` is the policy that
//! decides what an attempt makes of a recipient.

mod outcome;
mod send;

use herald_core::timestamp::now_ms;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::{MessageId, Sealer, TenantId};
use herald_metrics::Metrics;
use herald_smtp::{Egress, Timeouts};
use herald_store::handoff::{Handoff, Reservation};
use herald_store::{
    ClaimRequest, Claimed, Completed, DeliveryStore, HandoffLease, MessageContent, NewCapture,
    NextState, Outcome,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info_span, warn};

use crate::oauth::TokenCache;
use crate::pool::{PoolLimits, Pools, Reservation as RouteReservation};
use crate::{DefaultProvider, ProviderCache, RetryPolicy, WorkerStats};

/// A send is not started when less than this is left of its lease (or a
/// quarter of the lease, when that is shorter): its outcome could be refused
/// after the server accepted it, and the mail sent twice.
const LEASE_MARGIN_MS: i64 = 2_000;

/// The room of a tenant whose mail this node has not delivered yet, so
/// whose route it does not know: a default pool's connections.
const NEW_TENANT_ROOM: u32 = PoolLimits::DEFAULT_CONNECTIONS;

/// For how long after a place was asked for the worker counts as handed
/// mail over, and keeps places for more.
const HANDING_OVER_MS: i64 = 1_000;

/// Outcomes recorded in one call at most; more wait for the next.
const RECORD_BATCH: usize = 1024;

/// The first wait before outcomes the store refused are offered again; it
/// doubles with every refusal up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between two offers of outcomes the store refused.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// A message handed to the worker as it was stored, with the places
/// reserved for it.
struct Handed {
    content: MessageContent,
    recipients: Vec<Claimed>,
    places: Places,
}

/// What one delivery leaves to record: an outcome per recipient, and the
/// captured copies when the route was the capture mailbox.
type Done = (Vec<Outcome>, Vec<NewCapture>);

/// One delivery's outcomes on their way to the store, with the end of the
/// lease they were made under: until then they are kept while the store
/// refuses them, after it they are not worth keeping.
struct Finished {
    /// The message's tenant, id and submission time, for the log and the
    /// submit-to-delivered latency.
    about: About,
    outcomes: Vec<Outcome>,
    captures: Vec<NewCapture>,
    lease_until: i64,
    /// True once the store has refused them.
    refused: bool,
}

/// Whose outcomes these are: what the recorder's log lines and metrics need
/// of a message, which its outcomes do not carry.
#[derive(Clone, Copy)]
struct About {
    tenant: TenantId,
    message: MessageId,
    created_at: i64,
}

/// How a node's worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This node's name, recorded on leases and attempts.
    pub node: String,
    /// This process's random id, recorded on leases (see [`herald_core::ids::new_incarnation`]).
    pub incarnation: String,
    /// How long a claim holds a recipient before another worker may take it.
    pub lease: Duration,
    /// How often to look for due mail when nothing wakes the worker.
    pub poll: Duration,
    /// Messages in flight at once on this node.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    /// Where tenants' SMTP servers may be.
    pub egress: Arc<Egress>,
    /// Until when (Unix ms) this node may start a send: somewhat before the
    /// others take it for gone (its last recorded heartbeat plus
    /// `--node-stale-after`), kept by the node's heartbeat task. Once the
    /// others give this node's leases back, a late send here would deliver
    /// the mail a second time. `None` when the node records no heartbeat.
    pub standing: Option<Arc<AtomicI64>>,
    /// Where the worker counts what it does (deliveries, claims, commits,
    /// its route pools); a registry of its own unless the node shares one.
    pub metrics: Arc<Metrics>,
    /// The node's webhook dispatcher: the events outcomes write are leased
    /// to it in their commit while it has room, and it is woken for those
    /// left to claim. `None` for a gateway's worker.
    pub webhooks: Option<crate::webhook::Dispatcher>,
    /// True for a node: mail whose route is a server pinned to a gateway is
    /// handed to that gateway unsent (the node never delivers it). False
    /// for a gateway's own worker, which is the one that delivers it.
    pub hands_pinned_mail_over: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            node: "herald".into(),
            incarnation: herald_core::ids::new_incarnation(),
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(5),
            concurrency: 256,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            egress: Arc::new(Egress::default()),
            standing: None,
            metrics: Arc::default(),
            webhooks: None,
            hands_pinned_mail_over: true,
        }
    }
}

/// The delivery worker of one node.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn DeliveryStore>,
    sealer: Arc<Sealer>,
    default: Arc<DefaultProvider>,
    config: Arc<WorkerConfig>,
    wake: Arc<Notify>,
    pools: Arc<Pools>,
    tokens: Arc<TokenCache>,
    stats: Arc<WorkerStats>,
    cache: Arc<ProviderCache>,
    /// Messages in flight on this node, per tenant.
    load: Arc<Mutex<HashMap<TenantId, usize>>>,
    /// The node's places for deliveries (`concurrency` of them): each
    /// delivery holds one, whether its mail was claimed or handed over.
    permits: Arc<Semaphore>,
    /// Where reservations give the worker their messages; `None` once the
    /// worker stops taking any.
    handed_to: Arc<Mutex<Option<mpsc::UnboundedSender<Handed>>>>,
    /// The other end, taken by [`Worker::run`].
    handed: Arc<Mutex<Option<mpsc::UnboundedReceiver<Handed>>>>,
    /// When (Unix ms) each tenant last asked for a place, to hand mail
    /// over: while any does, a claim leaves places for it (see
    /// [`Worker::handing_over`]).
    asked_by: Arc<Mutex<HashMap<TenantId, i64>>>,
}

/// A message of a tenant in flight on this node, until its delivery ends.
struct TenantPlace {
    load: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl TenantPlace {
    fn take(load: &Arc<Mutex<HashMap<TenantId, usize>>>, tenant: TenantId) -> TenantPlace {
        *load.lock().expect("load lock").entry(tenant).or_default() += 1;
        TenantPlace {
            load: load.clone(),
            tenant,
        }
    }
}

impl Drop for TenantPlace {
    fn drop(&mut self) {
        let mut load = self.load.lock().expect("load lock");
        if let Some(count) = load.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                load.remove(&self.tenant);
            }
        }
    }
}

/// What a delivery holds while it runs: one of the node's places, its
/// tenant's place on this node, and its claim on its route's room when the
/// route is known.
struct Places {
    _permit: OwnedSemaphorePermit,
    _tenant: TenantPlace,
    _route: Option<RouteReservation>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn DeliveryStore>,
        sealer: Arc<Sealer>,
        default: Arc<DefaultProvider>,
        cache: Arc<ProviderCache>,
        config: WorkerConfig,
    ) -> Self {
        let tokens = Arc::new(TokenCache::new(config.egress.clone()));
        let (handed_to, handed) = mpsc::unbounded_channel();
        Worker {
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            handed_to: Arc::new(Mutex::new(Some(handed_to))),
            handed: Arc::new(Mutex::new(Some(handed))),
            asked_by: Arc::default(),
            store,
            sealer,
            default,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
            pools: Arc::new(Pools::default()),
            tokens,
            stats: Arc::new(WorkerStats::default()),
            cache,
            load: Arc::default(),
        }
    }

    /// The most one tenant may have in flight on this node: three quarters
    /// of its places, so others always find some free.
    fn tenant_share(&self) -> usize {
        (self.config.concurrency * 3 / 4).max(1)
    }

    /// How many recipients each tenant may have claimed now: what its route
    /// can start soon (its connections plus its recent pace, less what is
    /// claimed for it), within the tenant's share of this node (see
    /// [`tenant_room`]); a tenant in `handing` (its mail is being handed
    /// over) has `kept` places of its share kept for more. Tenants not
    /// listed (this node has not delivered their mail yet) get the second
    /// value.
    fn rooms(&self, kept: usize, handing: &HashSet<TenantId>) -> (HashMap<TenantId, u32>, u32) {
        let share = self.tenant_share();
        let load = self.load.lock().expect("load lock").clone();
        let routes = self.pools.routes_of_tenants();
        let room = |tenant: &TenantId, route: usize| {
            let mine = load.get(tenant).copied().unwrap_or(0);
            let kept = if handing.contains(tenant) { kept } else { 0 };
            tenant_room(route, share, kept, mine)
        };
        let mut rooms: HashMap<TenantId, u32> = routes
            .iter()
            .map(|(tenant, pool)| {
                // The capture mailbox takes any amount at once.
                let route = pool.as_ref().map_or(usize::MAX, |pool| pool.room());
                (*tenant, room(tenant, route))
            })
            .collect();
        for tenant in load.keys().filter(|t| !routes.contains_key(t)) {
            rooms.insert(*tenant, room(tenant, NEW_TENANT_ROOM as usize));
        }
        (rooms, NEW_TENANT_ROOM.min(share as u32))
    }

    /// The tenants that asked for a place to hand mail over within the last
    /// [`HANDING_OVER_MS`]; the others are forgotten.
    fn handing_over(&self) -> HashSet<TenantId> {
        let now = now_ms();
        let mut asked = self.asked_by.lock().expect("hand-off lock");
        asked.retain(|_, at| now.saturating_sub(*at) < HANDING_OVER_MS);
        asked.keys().copied().collect()
    }

    /// What a delivery of `tenant`'s mail holds while it runs, with the
    /// node's place it was given.
    fn places(&self, tenant: TenantId, permit: OwnedSemaphorePermit) -> Places {
        let route = self
            .pools
            .routes_of_tenant(tenant)
            .map(|pool| pool.reserve());
        Places {
            _permit: permit,
            _tenant: TenantPlace::take(&self.load, tenant),
            _route: route,
        }
    }

    /// A handle that makes the worker look for mail at once (after a submission).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` turns true, then finishes the messages in flight.
    ///
    /// A delivery hands its outcomes to one recorder task and is done, so its
    /// connection and its place among the `concurrency` serve the next message
    /// while the outcomes wait for their commit; the recorder takes whatever
    /// has gathered during the previous commit into the next one.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (finished, outcomes) = mpsc::channel(self.config.concurrency.max(1));
        let recorder = tokio::spawn(self.clone().record_all(outcomes));
        let mut handed = self
            .handed
            .lock()
            .expect("hand-off lock")
            .take()
            .expect("a worker runs once");
        let mut in_flight = JoinSet::new();
        // True when new mail may be waiting: a submission woke the worker, or
        // the pause ran out. Then a claim is made for whatever places are
        // free; otherwise, under load, only once half of them are (one claim
        // costs a commit, and many small ones would leave connections idle
        // while each waits for its own).
        let mut kicked = true;
        while !*shutdown.borrow() {
            while in_flight.try_join_next().is_some() {}
            while let Ok(mail) = handed.try_recv() {
                self.start(&mut in_flight, &finished, mail);
            }
            self.pools.sweep();
            self.config.metrics.pools(self.pools.gauges());
            let free = self.permits.available_permits();
            // A node the others may take for gone (its heartbeats are late)
            // claims nothing: it could not start the sends.
            let late = !self.may_start(i64::MAX);
            if late {
                WorkerStats::add(&self.stats.late_turns, 1);
            }
            // The places a claim may fill, held while it runs so that mail
            // handed over meanwhile does not take them twice; while mail is
            // being handed over (a place was asked for within the last
            // second), a quarter of the node's places stay for it (see
            // `reserve`). A node that hands nothing over claims them all.
            let handing = self.handing_over();
            let kept = if handing.is_empty() {
                0
            } else {
                self.config.concurrency / 4
            };
            let room = free.saturating_sub(kept);
            // While deliveries run, each one's end wakes the loop: a claim
            // then waits for a worthwhile room rather than take a few.
            let worthwhile = room >= self.config.concurrency / 8;
            let may_claim = room > 0
                && !late
                && (in_flight.is_empty()
                    || (kicked && worthwhile)
                    || free >= self.config.concurrency / 2);
            let held = may_claim
                .then(|| {
                    self.permits
                        .clone()
                        .try_acquire_many_owned(room as u32)
                        .ok()
                })
                .flatten();
            let (claimed, full) = match held {
                Some(_) => {
                    kicked = false;
                    let (rooms, default_room) = self.rooms(kept, &handing);
                    let request = ClaimRequest {
                        node: self.config.node.clone(),
                        incarnation: self.config.incarnation.clone(),
                        now: now_ms(),
                        lease_ms: self.config.lease.as_millis() as i64,
                        limit: room as u32,
                        rooms,
                        default_room,
                    };
                    let full = request.full_tenants();
                    let began = std::time::Instant::now();
                    let claimed = match self.store.claim(request).await {
                        Ok(claimed) => {
                            let took = began.elapsed().as_secs_f64();
                            self.config.metrics.claim(claimed.len(), took);
                            claimed
                        }
                        Err(error) => {
                            warn!(%error, "could not claim due mail");
                            Vec::new()
                        }
                    };
                    (claimed, full)
                }
                None => (Vec::new(), Vec::new()),
            };
            if claimed.is_empty() {
                drop(held);
                let pause = if may_claim {
                    self.pause(&full).await
                } else {
                    self.config.poll
                };
                tokio::select! {
                    _ = self.wake.notified() => kicked = true,
                    _ = tokio::time::sleep(pause) => kicked = true,
                    _ = shutdown.changed() => {}
                    Some(mail) = handed.recv() => self.start(&mut in_flight, &finished, mail),
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                }
                continue;
            }
            let mut held = held.expect("a claim holds its places");
            WorkerStats::add(&self.stats.claimed, claimed.len());
            tracing::debug!(count = claimed.len(), "claimed due recipients");
            let groups = group_by_message(claimed);
            // One read for the whole claim, not one per message.
            let ids: Vec<MessageId> = groups.keys().copied().collect();
            let mut contents: std::collections::HashMap<MessageId, MessageContent> = match self
                .store
                .message_contents(&ids)
                .await
            {
                Ok(list) => list.into_iter().map(|c| (c.id, c)).collect(),
                Err(error) => {
                    warn!(%error, "could not load the claimed messages; their leases will expire and they will be retried");
                    continue;
                }
            };
            for (message, recipients) in groups {
                let Some(content) = contents.remove(&message) else {
                    continue;
                };
                let permit = held.split(1).expect("a place per claimed message");
                let places = self.places(recipients[0].tenant, permit);
                let mail = Handed {
                    content,
                    recipients,
                    places,
                };
                self.start(&mut in_flight, &finished, mail);
            }
        }
        // No more mail is handed over; what was reserved before comes still,
        // until every reservation has been given or dropped.
        self.permits.close();
        self.handed_to.lock().expect("hand-off lock").take();
        while let Some(mail) = handed.recv().await {
            self.start(&mut in_flight, &finished, mail);
        }
        // Shutdown: the messages already handed to a server finish and are recorded.
        while in_flight.join_next().await.is_some() {}
        // Idle connections say QUIT before the node goes: a server logs an
        // unannounced close as a lost connection.
        self.pools.close_idle().await;
        drop(finished);
        let _ = recorder.await;
    }

    /// Starts delivering a message, in a task that holds its places until
    /// it ends and hands its outcomes to the recorder.
    fn start(&self, in_flight: &mut JoinSet<()>, finished: &mpsc::Sender<Finished>, mail: Handed) {
        let Handed {
            content,
            recipients,
            places,
        } = mail;
        let worker = self.clone();
        let finished = finished.clone();
        let span = info_span!("deliver", tenant = %content.tenant_id, message_id = %content.id);
        let lease_until = recipients
            .iter()
            .map(|r| r.lease_until)
            .min()
            .unwrap_or_default();
        let about = About {
            tenant: content.tenant_id,
            message: content.id,
            created_at: content.due_from(),
        };
        // Boxed: the task then holds a pointer, not the whole delivery's
        // state, which tokio would copy when it stores the task and again
        // when it ends (3 % of a node's delivery time, in memcpy).
        in_flight.spawn(
            Box::pin(async move {
                let _places = places;
                if let Some((outcomes, captures)) = worker.deliver(content, recipients).await {
                    let done = Finished {
                        about,
                        outcomes,
                        captures,
                        lease_until,
                        refused: false,
                    };
                    // The recorder outlives every sender but this one.
                    let _ = finished.send(done).await;
                }
            })
            .instrument(span),
        );
    }

    /// Records finished deliveries until every sender is gone, as many at once
    /// as have gathered (up to [`RECORD_BATCH`] outcomes per call).
    ///
    /// Outcomes the store refuses (a full disk, a lost database) are kept and
    /// offered again with a doubling pause, together with whatever finished
    /// meanwhile, until they commit or their lease ends: a recipient whose
    /// outcome is lost stays `sending` until its lease expires and is then
    /// sent a second time. At shutdown what is still kept is offered once more.
    async fn record_all(self, mut finished: mpsc::Receiver<Finished>) {
        let mut pending: Vec<Finished> = Vec::new();
        let mut backoff = RECORD_RETRY_FIRST;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                received = finished.recv() => match received {
                    Some(done) => pending.push(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() => retry_at = None,
            }
            let mut gathered: usize = pending.iter().map(|f| f.outcomes.len()).sum();
            while gathered < RECORD_BATCH {
                match finished.try_recv() {
                    Ok(done) => {
                        gathered += done.outcomes.len();
                        pending.push(done);
                    }
                    Err(_) => break,
                }
            }
            // While the store refuses, new outcomes wait with the kept ones
            // for the next offer rather than hammer it.
            if retry_at.is_some() {
                continue;
            }
            if self.record_pending(&mut pending).await {
                backoff = RECORD_RETRY_FIRST;
            } else {
                retry_at = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(RECORD_RETRY_MAX);
            }
        }
        if !pending.is_empty() && !self.record_pending(&mut pending).await {
            let count: usize = pending.iter().map(|f| f.outcomes.len()).sum();
            warn!(
                count,
                "stopping with outcomes the store refused; their recipients stay sending until their leases expire, and are then sent again"
            );
        }
    }

    /// Records the kept outcomes, oldest first, up to [`RECORD_BATCH`] per
    /// call. Returns false when the store refused a call; what it refused
    /// stays in `pending`. Outcomes the store refused before and whose lease
    /// has ended are dropped first: the recipient may have been claimed
    /// again, and the fence would refuse them. Outcomes offered for the first
    /// time go to the fence whatever their lease: one whose recipient nobody
    /// claimed again still counts, and saves a second send.
    async fn record_pending(&self, pending: &mut Vec<Finished>) -> bool {
        let now = now_ms();
        pending.retain(|f| {
            if !f.refused || f.lease_until > now {
                return true;
            }
            WorkerStats::add(&self.stats.dropped, f.outcomes.len());
            for outcome in &f.outcomes {
                warn!(tenant = %f.about.tenant, message_id = %f.about.message, recipient_id = %outcome.recipient, "outcome dropped: its lease ended before the store accepted it; the recipient will be tried again");
            }
            false
        });
        while !pending.is_empty() {
            let mut size = 0;
            let take = pending
                .iter()
                .take_while(|f| {
                    let fits = size == 0 || size + f.outcomes.len() <= RECORD_BATCH;
                    size += f.outcomes.len();
                    fits
                })
                .count();
            let outcomes: Vec<Outcome> = pending[..take]
                .iter()
                .flat_map(|f| f.outcomes.iter().cloned())
                .collect();
            let captures: Vec<NewCapture> = pending[..take]
                .iter()
                .flat_map(|f| f.captures.iter().cloned())
                .collect();
            let about: Vec<About> = pending[..take]
                .iter()
                .flat_map(|f| f.outcomes.iter().map(|_| f.about))
                .collect();
            if !self.record(outcomes, captures, &about).await {
                WorkerStats::add(&self.stats.record_failures, 1);
                for f in &mut pending[..take] {
                    f.refused = true;
                }
                return false;
            }
            pending.drain(..take);
        }
        true
    }

    /// How long to wait when nothing is due: until the next due recipient
    /// of a tenant with room, at most the poll interval. A tenant without
    /// room gets some when one of its deliveries ends, which wakes the loop.
    async fn pause(&self, full: &[TenantId]) -> Duration {
        match self.store.next_due(full).await {
            Ok(Some(due)) => {
                let until = Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64);
                until.min(self.config.poll).max(Duration::from_millis(10))
            }
            _ => self.config.poll,
        }
    }

    /// True while enough is left of the lease, and of this node's standing
    /// with the others (see [`WorkerConfig::standing`]), to start a send.
    fn may_start(&self, lease_until: i64) -> bool {
        let margin = LEASE_MARGIN_MS.min(self.config.lease.as_millis() as i64 / 4);
        let standing = self
            .config
            .standing
            .as_ref()
            .map_or(i64::MAX, |until| until.load(Ordering::Acquire));
        let now = now_ms();
        now + margin < lease_until && now < standing
    }

    /// Offers outcomes to the store; false when it could not commit them.
    /// `about` says whose each outcome is. The outcomes the store accepted
    /// are counted in the metrics; a refused one changed nothing.
    async fn record(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        about: &[About],
    ) -> bool {
        let ids: Vec<_> = outcomes.iter().map(|o| o.recipient).collect();
        let counted: Vec<(&'static str, String, i64)> = outcomes
            .iter()
            .map(|o| {
                let outcome = match o.next {
                    NextState::Sent => "sent",
                    NextState::Deferred { .. } => "deferred",
                    NextState::Failed => "failed",
                };
                (
                    outcome,
                    o.attempt.step.clone().unwrap_or_default(),
                    o.attempt.at,
                )
            })
            .collect();
        let began = std::time::Instant::now();
        let webhooks = self.config.webhooks.as_ref();
        // Held until the outcomes are recorded: their events may go
        // straight to the dispatcher.
        let room = webhooks.and_then(crate::webhook::Dispatcher::event_room);
        let completed = match &room {
            Some(room) => {
                self.store
                    .complete_and_lease_events(outcomes, captures, room.lease().clone())
                    .await
            }
            None => self.store.complete(outcomes, captures).await,
        };
        match completed {
            Ok(Completed {
                accepted,
                events,
                handed,
            }) => {
                let left = events.saturating_sub(handed.len());
                if let Some(room) = room {
                    room.take(handed);
                }
                if left > 0
                    && let Some(webhooks) = webhooks
                {
                    webhooks.waker().notify_one();
                }
                let metrics = &self.config.metrics;
                metrics.commit(ids.len(), began.elapsed().as_secs_f64());
                for (((outcome, step, at), about), ok) in counted.iter().zip(about).zip(&accepted) {
                    if !ok {
                        continue;
                    }
                    metrics.delivered(outcome, step);
                    if *outcome == "sent" {
                        metrics.delivery_latency((at - about.created_at) as f64 / 1000.0);
                    }
                }
                for ((id, about), ok) in ids.iter().zip(about).zip(accepted) {
                    WorkerStats::add(
                        if ok {
                            &self.stats.recorded
                        } else {
                            &self.stats.refused
                        },
                        1,
                    );
                    if !ok {
                        warn!(tenant = %about.tenant, message_id = %about.message, recipient_id = %id, "outcome refused: the lease expired and another claim took the recipient");
                    }
                }
                true
            }
            Err(error) => {
                warn!(%error, count = ids.len(), "could not record outcomes; keeping them to offer again");
                false
            }
        }
    }
}

impl Handoff for Worker {
    /// A place for a message of `tenant` when the worker can start it soon:
    /// more than an eighth of the node's places free (those stay for
    /// claims: retries, mail queued earlier or by other nodes), the tenant
    /// within its share of the node and its route not at its limit, and the
    /// node in good standing. The lease is the one a claim would take.
    ///
    /// A claim in progress holds the places it may fill but, while mail is
    /// handed over, leaves a quarter free, so mail stored meanwhile is still
    /// handed over: were it queued instead, it would wake the worker for
    /// another claim, which would hold the places again.
    fn reserve(&self, tenant: TenantId) -> Option<Reservation> {
        self.asked_by
            .lock()
            .expect("hand-off lock")
            .insert(tenant, now_ms());
        if self.permits.available_permits() <= self.config.concurrency / 8
            || !self.may_start(i64::MAX)
        {
            return None;
        }
        let mine = self
            .load
            .lock()
            .expect("load lock")
            .get(&tenant)
            .copied()
            .unwrap_or(0);
        let route_full = self
            .pools
            .routes_of_tenant(tenant)
            .is_some_and(|pool| pool.room() == 0);
        if mine >= self.tenant_share() || route_full {
            return None;
        }
        let sender = self.handed_to.lock().expect("hand-off lock").clone()?;
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let places = self.places(tenant, permit);
        let lease = HandoffLease {
            node: self.config.node.clone(),
            incarnation: self.config.incarnation.clone(),
            until: now_ms() + self.config.lease.as_millis() as i64,
        };
        let (stats, metrics) = (self.stats.clone(), self.config.metrics.clone());
        Some(Reservation::new(lease, move |content, recipients| {
            WorkerStats::add(&stats.handed, recipients.len());
            metrics.handed(recipients.len());
            // A worker that stopped meanwhile leaves the recipients to their
            // lease: given back when the node starts again, or claimed by
            // another node when it ends.
            let _ = sender.send(Handed {
                content,
                recipients,
                places,
            });
        }))
    }
}

/// The room a claim gives one tenant: what its route can start soon
/// (`route`), within its `share` of the node less what it holds already
/// (`mine`) and less `kept`, the places kept for its mail handed over while
/// it hands mail over: were a claim to fill the tenant's whole share, its
/// next submissions could not be handed over, would be stored queued, and
/// would wait for the claim after.
fn tenant_room(route: usize, share: usize, kept: usize, mine: usize) -> u32 {
    let share = share.saturating_sub(kept).max(1);
    u32::try_from(route.min(share.saturating_sub(mine))).unwrap_or(u32::MAX)
}

fn group_by_message(claimed: Vec<Claimed>) -> BTreeMap<MessageId, Vec<Claimed>> {
    let mut groups: BTreeMap<MessageId, Vec<Claimed>> = BTreeMap::new();
    for c in claimed {
        groups.entry(c.message).or_default().push(c);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::tenant_room;

    #[test]
    fn a_claim_leaves_a_tenant_handing_mail_over_its_kept_places() {
        // Concurrency 256: a share of 192, a quarter (64) kept.
        assert_eq!(
            tenant_room(1_000, 192, 0, 0),
            192,
            "no hand-over: the whole share"
        );
        assert_eq!(tenant_room(1_000, 192, 64, 0), 128);
        assert_eq!(tenant_room(1_000, 192, 64, 100), 28);
        assert_eq!(
            tenant_room(1_000, 192, 64, 128),
            0,
            "the rest is the hand-over's"
        );
        assert_eq!(tenant_room(1_000, 192, 64, 190), 0);
    }

    #[test]
    fn a_tenants_room_is_its_routes_at_most_and_never_a_share_of_nothing() {
        assert_eq!(tenant_room(5, 192, 64, 0), 5, "the route can start five");
        assert_eq!(
            tenant_room(usize::MAX, 192, 0, 0),
            192,
            "the capture mailbox"
        );
        // A node of one place: the share is kept at one.
        assert_eq!(tenant_room(10, 0, 0, 0), 1);
        assert_eq!(tenant_room(10, 1, 1, 0), 1);
    }
}
