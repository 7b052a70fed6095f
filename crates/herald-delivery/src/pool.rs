//! Connection pools, one per provider route: a limit on connections open at
//! once, reuse of idle connections up to a message cap, a rate limit that
//! delays mail and never drops it, and the room a route has for more mail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::TenantId;
use herald_smtp::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a route's connections are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections (and so messages in flight) at once.
    pub max_connections: u32,
    /// Messages over one connection before it is replaced.
    pub max_messages_per_connection: u32,
    /// How long an unused connection stays open.
    pub idle_timeout: Duration,
    /// Messages per minute at most.
    pub rate_per_minute: Option<u32>,
}

impl PoolLimits {
    /// A server entry's `max_connections` when none is given.
    pub const DEFAULT_CONNECTIONS: u32 = 4;
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: Self::DEFAULT_CONNECTIONS,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(30),
            rate_per_minute: None,
        }
    }
}

/// The window over which a route's pace is measured: a route may have in
/// flight its connections plus what it finished in the last window, so a
/// message claimed for it waits about this long for a connection at most.
const PACE_WINDOW: Duration = Duration::from_millis(200);

/// An open connection waiting for its next message.
struct Idle {
    conn: Connection,
    since: Instant,
    sent: u32,
}

/// How long a route's pool is kept once nothing uses it (or its idle
/// timeout, when longer): its pace and rate limit still describe the route
/// while its tenants' mail keeps coming, and a node that served many routes
/// once does not keep them all.
const UNUSED_POOL_KEPT: Duration = Duration::from_secs(300);

/// How a route's pool has been used, shared with its slots.
struct Usage {
    /// Connection slots that have come free since the pool was made.
    freed: AtomicU64,
    /// When the pool was last looked up for a message, or a slot or a
    /// reservation of it ended.
    last: Mutex<Instant>,
}

impl Usage {
    fn touch(&self) {
        *self.last.lock().expect("usage lock") = Instant::now();
    }
}

/// The pool of one route.
pub struct RoutePool {
    limits: PoolLimits,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// The earliest time the next message may start, for the rate limit.
    next_start: Mutex<Instant>,
    usage: Arc<Usage>,
    /// The pace: when the current window began, the count of `freed` then,
    /// and how many came free in the window before.
    pace: Mutex<(Instant, u64, u64)>,
    /// Messages claimed for this route and not finished yet.
    reserved: AtomicUsize,
}

/// A connection slot of a route, held while one message is sent; it counts
/// when it comes free, which measures the route's pace.
pub struct Slot {
    /// When the slot let its message go: its turn under the rate limit, or
    /// when it was taken. An attempt's duration counts from here, so the
    /// starts of a limited route's attempts are spaced by the limit however
    /// late a busy machine wakes each one.
    pub since: Instant,
    _permit: OwnedSemaphorePermit,
    usage: Arc<Usage>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.usage.freed.fetch_add(1, Ordering::Relaxed);
        self.usage.touch();
    }
}

/// A message claimed for a route, until its delivery ends.
pub struct Reservation(Arc<RoutePool>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Ordering::Relaxed);
        self.0.usage.touch();
    }
}

/// A connection taken from a pool, with the count of messages it has carried.
pub struct Lease {
    pub conn: Connection,
    pub sent: u32,
    /// True when the connection was reused rather than opened for this message.
    pub reused: bool,
}

impl RoutePool {
    fn new(limits: PoolLimits) -> Self {
        RoutePool {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            next_start: Mutex::new(Instant::now()),
            usage: Arc::new(Usage {
                freed: AtomicU64::new(0),
                last: Mutex::new(Instant::now()),
            }),
            pace: Mutex::new((Instant::now(), 0, 0)),
            reserved: AtomicUsize::new(0),
        }
    }

    /// How many more messages may be claimed for this route now: its
    /// connections plus what it finished in the last [`PACE_WINDOW`], less
    /// what is claimed for it already. A healthy server frees its slots every
    /// few milliseconds and gets as much as it can take; a slow or stalled
    /// one gets no more than it can start soon, so none of its mail waits
    /// claimed (and none of anybody else's waits behind it).
    pub fn room(&self) -> usize {
        self.room_at(Instant::now())
    }

    fn room_at(&self, now: Instant) -> usize {
        let freed = self.usage.freed.load(Ordering::Relaxed);
        let recent = {
            let mut pace = self.pace.lock().expect("pace lock");
            let (began, at_start, before) = *pace;
            let elapsed = now.saturating_duration_since(began);
            if elapsed >= PACE_WINDOW {
                // Scaled to one window, when the pool was not asked for a while.
                let per_window = (freed - at_start) as u128 * PACE_WINDOW.as_micros()
                    / elapsed.as_micros().max(1);
                *pace = (now, freed, per_window as u64);
                per_window as u64
            } else {
                before.max(freed - at_start)
            }
        };
        (self.limits.max_connections as usize + recent as usize)
            .saturating_sub(self.reserved.load(Ordering::Relaxed))
    }

    /// Counts a message claimed for this route until the reservation is dropped.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        self.reserved.fetch_add(1, Ordering::Relaxed);
        Reservation(self.clone())
    }

    /// Takes a connection slot within `patience`, then waits for the rate limit.
    ///
    /// A healthy server frees a slot within milliseconds; a pool still full
    /// after `patience` answers `None`: the caller gives the message back, and
    /// the worker claims none of the route's mail until a slot is free, so a
    /// stalled provider never holds up anybody else's mail for long.
    pub async fn slot_within(&self, patience: Duration) -> Option<Slot> {
        let permit = tokio::time::timeout(patience, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let mut since = Instant::now();
        if let Some(per_minute) = self.limits.rate_per_minute {
            let interval = Duration::from_secs(60) / per_minute.max(1);
            since = {
                let mut next = self.next_start.lock().expect("rate lock");
                let start = (*next).max(since);
                *next = start + interval;
                start
            };
            tokio::time::sleep_until(since.into()).await;
        }
        Some(Slot {
            since,
            _permit: permit,
            usage: self.usage.clone(),
        })
    }

    /// An idle connection that is still within its idle timeout, if any.
    pub fn take_idle(&self) -> Option<Lease> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.limits.idle_timeout {
                return Some(Lease {
                    conn: entry.conn,
                    sent: entry.sent,
                    reused: true,
                });
            }
        }
        None
    }

    /// Gives a healthy connection back, or closes it when it reached its
    /// message cap: QUIT goes in a task of its own, so the delivery that
    /// returned the connection does not wait for it.
    pub async fn put_back(&self, lease: Lease) {
        if lease.sent >= self.limits.max_messages_per_connection {
            lease.conn.close();
            return;
        }
        self.idle.lock().expect("pool lock").push(Idle {
            conn: lease.conn,
            since: Instant::now(),
            sent: lease.sent,
        });
    }

    /// Closes connections idle for longer than the timeout, each with QUIT
    /// in a task of its own.
    fn sweep(&self) {
        let timeout = self.limits.idle_timeout;
        let expired: Vec<Idle> = {
            let mut idle = self.idle.lock().expect("pool lock");
            let (expired, kept) = idle
                .drain(..)
                .partition(|entry| entry.since.elapsed() >= timeout);
            *idle = kept;
            expired
        };
        for entry in expired {
            entry.conn.close();
        }
    }

    /// True when nothing holds or waits for the pool (the caller holds the
    /// only other reference), it keeps no idle connection, its rate limit
    /// lets the next message go, and it was last used `keep` (or its idle
    /// timeout, when longer) ago or more: dropping it loses nothing.
    fn unused_for(self: &Arc<Self>, keep: Duration, now: Instant) -> bool {
        Arc::strong_count(self) == 1
            && self.reserved.load(Ordering::Relaxed) == 0
            && self.slots.available_permits() == self.limits.max_connections.max(1) as usize
            && self.idle.lock().expect("pool lock").is_empty()
            && *self.next_start.lock().expect("rate lock") <= now
            && now.saturating_duration_since(*self.usage.last.lock().expect("usage lock"))
                >= keep.max(self.limits.idle_timeout)
    }

    /// Slots in use, idle connections, and whether the route is stalled:
    /// every slot held, and none came free in the current or the last
    /// [`PACE_WINDOW`]. A read only: the pace is not moved on.
    fn gauges(&self) -> (usize, usize, bool) {
        let slots = self.limits.max_connections.max(1) as usize;
        let busy = slots.saturating_sub(self.slots.available_permits());
        let idle = self.idle.lock().expect("pool lock").len();
        let freed = self.usage.freed.load(Ordering::Relaxed);
        let (_, at_start, before) = *self.pace.lock().expect("pace lock");
        let stalled = busy == slots && before == 0 && freed == at_start;
        (busy, idle, stalled)
    }

    /// Every idle connection, taken out of the pool.
    fn take_all_idle(&self) -> Vec<Connection> {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.drain(..).map(|entry| entry.conn).collect()
    }
}

/// Every route's pool on this node, and which route each tenant's mail took
/// last (`None`: the capture mailbox, which has no pool).
pub struct Pools {
    routes: Mutex<HashMap<String, Arc<RoutePool>>>,
    tenants: Mutex<HashMap<TenantId, Option<String>>>,
    /// How long an unused pool is kept: [`UNUSED_POOL_KEPT`], or zero in tests.
    keep: Duration,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            routes: Mutex::default(),
            tenants: Mutex::default(),
            keep: UNUSED_POOL_KEPT,
        }
    }
}

impl Pools {
    /// The pool for a route key that `tenant`'s mail takes, created with
    /// `limits` on first use (or when the limits changed, which happens only
    /// when the server entry changed).
    pub fn get(&self, key: &str, limits: PoolLimits, tenant: TenantId) -> Arc<RoutePool> {
        self.tenants
            .lock()
            .expect("pools lock")
            .insert(tenant, Some(key.to_owned()));
        self.route(key, limits)
    }

    /// Notes that `tenant`'s mail goes to the capture mailbox, which takes
    /// any amount at once.
    pub fn note_capture(&self, tenant: TenantId) {
        self.tenants
            .lock()
            .expect("pools lock")
            .insert(tenant, None);
    }

    /// The pool for a route key, without noting whose mail takes it (a test
    /// message's provider need not be its tenant's).
    pub fn route(&self, key: &str, limits: PoolLimits) -> Arc<RoutePool> {
        let mut routes = self.routes.lock().expect("pools lock");
        match routes.get(key) {
            Some(pool) if pool.limits == limits => {
                pool.usage.touch();
                pool.clone()
            }
            _ => {
                let pool = Arc::new(RoutePool::new(limits));
                routes.insert(key.to_owned(), pool.clone());
                pool
            }
        }
    }

    /// The pool `tenant`'s mail took last, if it was an SMTP route.
    pub fn routes_of_tenant(&self, tenant: TenantId) -> Option<Arc<RoutePool>> {
        let key = self
            .tenants
            .lock()
            .expect("pools lock")
            .get(&tenant)?
            .clone()?;
        self.routes.lock().expect("pools lock").get(&key).cloned()
    }

    /// The pool each tenant's mail took last: `None` for the capture
    /// mailbox; a tenant not listed has not been delivered to on this node.
    pub fn routes_of_tenants(&self) -> HashMap<TenantId, Option<Arc<RoutePool>>> {
        let routes = self.routes.lock().expect("pools lock");
        self.tenants
            .lock()
            .expect("pools lock")
            .iter()
            .filter_map(|(tenant, key)| match key {
                None => Some((*tenant, None)),
                Some(key) => routes.get(key).map(|pool| (*tenant, Some(pool.clone()))),
            })
            .collect()
    }

    /// Closes idle connections past their timeout in every pool, then drops
    /// the pools nothing has used for a while (see [`RoutePool::unused_for`])
    /// and forgets which tenants' mail took them: a tenant whose route is
    /// forgotten is treated as one this node has not delivered for yet.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut routes = self.routes.lock().expect("pools lock");
        for pool in routes.values() {
            pool.sweep();
        }
        routes.retain(|_, pool| !pool.unused_for(self.keep, now));
        self.tenants
            .lock()
            .expect("pools lock")
            .retain(|_, key| key.as_ref().is_none_or(|key| routes.contains_key(key)));
    }

    /// The state of every pool, for the metrics.
    pub fn gauges(&self) -> herald_metrics::PoolGauges {
        let routes = self.routes.lock().expect("pools lock");
        let mut gauges = herald_metrics::PoolGauges {
            routes: routes.len() as u64,
            ..Default::default()
        };
        for pool in routes.values() {
            let (busy, idle, stalled) = pool.gauges();
            gauges.busy += busy as u64;
            gauges.idle += idle as u64;
            gauges.stalled += u64::from(stalled);
        }
        gauges
    }

    /// Says QUIT on every idle connection of every pool and waits for them
    /// (each within its short QUIT timeout), for a node that shuts down: a
    /// connection merely dropped says QUIT in a task of its own, which a
    /// runtime that is ending may not run.
    pub async fn close_idle(&self) {
        let idle: Vec<Connection> = self
            .routes
            .lock()
            .expect("pools lock")
            .values()
            .flat_map(|pool| pool.take_all_idle())
            .collect();
        let quits: Vec<_> = idle
            .into_iter()
            .map(|conn| tokio::spawn(conn.quit()))
            .collect();
        for quit in quits {
            let _ = quit.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{Port, Security, SmtpHost};
    use herald_smtp::Target;
    use herald_testsmtp::{SessionEnd, TestSmtpServer};

    /// A fresh connection to the test server, as the worker would lease it.
    async fn lease(server: &TestSmtpServer, sent: u32) -> Lease {
        let target = Target::new(
            SmtpHost::parse("127.0.0.1").unwrap(),
            Port::new(server.port().into()).unwrap(),
            Security::None,
            "herald.test",
        );
        Lease {
            conn: Connection::open(&target, None).await.unwrap(),
            sent,
            reused: false,
        }
    }

    async fn ended_with_quit(server: &TestSmtpServer) {
        let ended = server
            .wait_for_ended_sessions(1, Duration::from_secs(10))
            .await;
        assert_eq!(ended, [SessionEnd { quit: true }]);
    }

    #[tokio::test]
    async fn an_idle_connection_swept_says_quit() {
        let server = TestSmtpServer::start().await;
        let pool = RoutePool::new(PoolLimits {
            idle_timeout: Duration::ZERO,
            ..PoolLimits::default()
        });
        pool.put_back(lease(&server, 1).await).await;
        pool.sweep();
        ended_with_quit(&server).await;
    }

    #[tokio::test]
    async fn a_connection_at_its_message_cap_says_quit() {
        let server = TestSmtpServer::start().await;
        let pool = RoutePool::new(PoolLimits {
            max_messages_per_connection: 1,
            ..PoolLimits::default()
        });
        pool.put_back(lease(&server, 1).await).await;
        ended_with_quit(&server).await;
    }

    #[tokio::test]
    async fn idle_connections_of_a_dropped_pool_say_quit() {
        let server = TestSmtpServer::start().await;
        let pools = Pools::default();
        let pool = pools.get("route", PoolLimits::default(), TenantId::new());
        pool.put_back(lease(&server, 1).await).await;
        drop(pool);
        drop(pools);
        ended_with_quit(&server).await;
    }

    #[tokio::test]
    async fn close_idle_says_quit_on_every_idle_connection() {
        let server = TestSmtpServer::start().await;
        let pools = Pools::default();
        let pool = pools.get("route", PoolLimits::default(), TenantId::new());
        pool.put_back(lease(&server, 1).await).await;
        pools.close_idle().await;
        assert!(pool.take_idle().is_none());
        ended_with_quit(&server).await;
    }

    #[tokio::test]
    async fn a_route_has_room_for_its_connections_less_what_is_claimed_for_it() {
        let pool = Arc::new(RoutePool::new(PoolLimits {
            max_connections: 2,
            ..PoolLimits::default()
        }));
        assert_eq!(pool.room(), 2, "a new route: its connections");
        let first = pool.reserve();
        let _second = pool.reserve();
        assert_eq!(pool.room(), 0, "two claimed for two connections");
        drop(first);
        assert_eq!(pool.room(), 1, "a finished delivery gives its place back");
    }

    #[tokio::test]
    async fn a_route_that_finishes_messages_has_room_for_what_it_finishes() {
        let pool = Arc::new(RoutePool::new(PoolLimits {
            max_connections: 1,
            ..PoolLimits::default()
        }));
        // Judged at the moment the pace window began, so however slowly
        // this test runs the five count as finished within the window.
        let began = pool.pace.lock().unwrap().0;
        let _claimed = pool.reserve();
        assert_eq!(pool.room_at(began), 0);
        for _ in 0..5 {
            drop(pool.slot_within(Duration::from_secs(1)).await.unwrap());
        }
        assert_eq!(
            pool.room_at(began),
            5,
            "the connection plus the five finished, less the one claimed"
        );
    }

    #[tokio::test]
    async fn the_gauges_count_busy_and_idle_connections_and_stalled_routes() {
        let server = TestSmtpServer::start().await;
        let pools = Pools::default();
        let limits = PoolLimits {
            max_connections: 1,
            ..PoolLimits::default()
        };
        let pool = pools.get("route", limits, TenantId::new());
        let gauges = |busy, idle, stalled| herald_metrics::PoolGauges {
            routes: 1,
            busy,
            idle,
            stalled,
        };
        assert_eq!(pools.gauges(), gauges(0, 0, 0));
        let slot = pool.slot_within(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            pools.gauges(),
            gauges(1, 0, 1),
            "its one slot held and none freed: stalled"
        );
        drop(slot);
        pool.put_back(lease(&server, 1).await).await;
        assert_eq!(
            pools.gauges(),
            gauges(0, 1, 0),
            "a slot came free and a connection waits"
        );
        pools.close_idle().await;
    }

    #[tokio::test]
    async fn tenants_are_mapped_to_their_last_route_or_the_capture_mailbox() {
        let pools = Pools::default();
        let (smtp, capture, unseen) = (TenantId::new(), TenantId::new(), TenantId::new());
        let pool = pools.get("route", PoolLimits::default(), smtp);
        pools.note_capture(capture);
        let routes = pools.routes_of_tenants();
        assert!(Arc::ptr_eq(routes[&smtp].as_ref().unwrap(), &pool));
        assert!(routes[&capture].is_none());
        assert!(!routes.contains_key(&unseen));
    }

    /// Pools that keep nothing unused: a sweep drops every pool nothing uses.
    fn pools_keeping_nothing() -> Pools {
        Pools {
            keep: Duration::ZERO,
            ..Pools::default()
        }
    }

    /// Limits whose idle timeout keeps nothing either.
    const NO_IDLE: PoolLimits = PoolLimits {
        max_connections: 2,
        max_messages_per_connection: 100,
        idle_timeout: Duration::ZERO,
        rate_per_minute: None,
    };

    #[tokio::test]
    async fn a_sweep_drops_an_unused_pool_and_forgets_the_tenants_it_served() {
        let pools = pools_keeping_nothing();
        let (smtp, capture) = (TenantId::new(), TenantId::new());
        let pool = pools.get("route", NO_IDLE, smtp);
        pools.note_capture(capture);
        pools.sweep();
        assert!(
            pools.routes_of_tenant(smtp).is_some(),
            "a pool its sender still holds stays"
        );
        drop(pool);
        pools.sweep();
        assert!(pools.routes_of_tenant(smtp).is_none());
        let routes = pools.routes_of_tenants();
        assert!(!routes.contains_key(&smtp), "the tenant is forgotten");
        assert!(routes[&capture].is_none(), "the capture mailbox is no pool");
        assert!(pools.routes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_pool_is_kept_while_a_message_is_claimed_for_it() {
        let pools = pools_keeping_nothing();
        let tenant = TenantId::new();
        drop(pools.get("route", NO_IDLE, tenant));
        let reservation = pools.routes_of_tenant(tenant).unwrap().reserve();
        pools.sweep();
        assert!(pools.routes_of_tenant(tenant).is_some());
        drop(reservation);
        pools.sweep();
        assert!(pools.routes_of_tenant(tenant).is_none());
    }

    #[tokio::test]
    async fn a_pool_is_kept_while_one_of_its_slots_is_in_use() {
        let pools = pools_keeping_nothing();
        let tenant = TenantId::new();
        let pool = pools.get("route", NO_IDLE, tenant);
        let slot = pool.slot_within(Duration::from_secs(1)).await.unwrap();
        drop(pool);
        pools.sweep();
        assert!(pools.routes_of_tenant(tenant).is_some());
        drop(slot);
        pools.sweep();
        assert!(pools.routes_of_tenant(tenant).is_none());
    }

    #[tokio::test]
    async fn a_rate_limited_pool_gives_each_slot_its_own_turn() {
        let pools = pools_keeping_nothing();
        let pool = pools.get(
            "route",
            PoolLimits {
                max_connections: 3,
                rate_per_minute: Some(6_000),
                ..NO_IDLE
            },
            TenantId::new(),
        );
        let interval = Duration::from_millis(10);
        let mut turns = Vec::new();
        for _ in 0..3 {
            turns.push(pool.slot_within(Duration::from_secs(1)).await.unwrap());
        }
        // However late each waiting task was woken, its turn is an interval
        // after the one before.
        for pair in turns.windows(2) {
            assert!(pair[1].since >= pair[0].since + interval);
        }
        assert!(turns[2].since <= Instant::now());
    }

    #[tokio::test]
    async fn a_pool_is_kept_while_its_rate_limit_holds_the_next_message_back() {
        let pools = pools_keeping_nothing();
        let tenant = TenantId::new();
        let pool = pools.get(
            "route",
            PoolLimits {
                rate_per_minute: Some(1),
                ..NO_IDLE
            },
            tenant,
        );
        // The first message goes at once; the next may start a minute later.
        drop(pool.slot_within(Duration::from_secs(1)).await.unwrap());
        drop(pool);
        pools.sweep();
        assert!(
            pools.routes_of_tenant(tenant).is_some(),
            "a new pool would let the next message go at once"
        );
    }

    #[tokio::test]
    async fn a_recently_used_pool_is_kept() {
        let pools = Pools::default();
        let tenant = TenantId::new();
        drop(pools.get("route", NO_IDLE, tenant));
        pools.sweep();
        assert!(pools.routes_of_tenant(tenant).is_some());
    }

    #[tokio::test]
    async fn a_route_used_again_after_its_pool_was_dropped_gets_a_new_pool() {
        let pools = pools_keeping_nothing();
        let tenant = TenantId::new();
        let first = pools.get("route", NO_IDLE, tenant);
        let witness = Arc::downgrade(&first);
        drop(first);
        pools.sweep();
        assert!(witness.upgrade().is_none(), "the dropped pool is gone");
        let second = pools.get("route", NO_IDLE, tenant);
        assert!(Arc::ptr_eq(
            &pools.routes_of_tenant(tenant).unwrap(),
            &second
        ));
    }
}
