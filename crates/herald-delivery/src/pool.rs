//! Connection pools, one per provider route: a limit on connections open at
//! once, reuse of idle connections up to a message cap, and a rate limit that
//! delays mail and never drops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: 4,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(30),
            rate_per_minute: None,
        }
    }
}

/// A route whose connections are all in use and none of which has come free
/// for this long is stalled: its mail is not claimed until one does.
const STALLED_AFTER: Duration = Duration::from_millis(50);

/// An open connection waiting for its next message.
struct Idle {
    conn: Connection,
    since: Instant,
    sent: u32,
}

/// The pool of one route.
pub struct RoutePool {
    limits: PoolLimits,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// The earliest time the next message may start, for the rate limit.
    next_start: Mutex<Instant>,
    /// When a connection slot last came free, in microseconds since `born`.
    last_freed_us: Arc<AtomicU64>,
    born: Instant,
}

/// A connection slot of a route, held while one message is sent; it records
/// when it comes free, which tells a busy route from a stalled one.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    last_freed_us: Arc<AtomicU64>,
    born: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = self.born.elapsed().as_micros() as u64;
        self.last_freed_us.fetch_max(now, Ordering::Relaxed);
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
            last_freed_us: Arc::new(AtomicU64::new(0)),
            born: Instant::now(),
        }
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
        if let Some(per_minute) = self.limits.rate_per_minute {
            let interval = Duration::from_secs(60) / per_minute.max(1);
            let start = {
                let mut next = self.next_start.lock().expect("rate lock");
                let start = (*next).max(Instant::now());
                *next = start + interval;
                start
            };
            tokio::time::sleep_until(start.into()).await;
        }
        Some(Slot {
            _permit: permit,
            last_freed_us: self.last_freed_us.clone(),
            born: self.born,
        })
    }

    /// True when every connection slot is in use and none has come free for
    /// [`STALLED_AFTER`]: a slow server, or a rate limit holding mail back.
    /// A fast server's slots are all busy too under load, but one frees every
    /// few milliseconds, and its mail keeps being claimed.
    pub fn is_stalled(&self) -> bool {
        let last_freed = Duration::from_micros(self.last_freed_us.load(Ordering::Relaxed));
        self.slots.available_permits() == 0 && self.born.elapsed() > last_freed + STALLED_AFTER
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

    /// Every idle connection, taken out of the pool.
    fn take_all_idle(&self) -> Vec<Connection> {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.drain(..).map(|entry| entry.conn).collect()
    }
}

/// Every route's pool on this node, and which tenants last used which route.
#[derive(Default)]
pub struct Pools {
    routes: Mutex<HashMap<String, Arc<RoutePool>>>,
    tenants: Mutex<HashMap<TenantId, String>>,
}

impl Pools {
    /// The pool for a route key, created with `limits` on first use (or when
    /// the limits changed, which happens only when the server entry changed).
    pub fn get(&self, key: &str, limits: PoolLimits, tenant: TenantId) -> Arc<RoutePool> {
        self.tenants
            .lock()
            .expect("pools lock")
            .insert(tenant, key.to_owned());
        let mut routes = self.routes.lock().expect("pools lock");
        match routes.get(key) {
            Some(pool) if pool.limits == limits => pool.clone(),
            _ => {
                let pool = Arc::new(RoutePool::new(limits));
                routes.insert(key.to_owned(), pool.clone());
                pool
            }
        }
    }

    /// Tenants whose route is stalled: claiming more of their mail now would
    /// only make it wait, and hold up nobody else's.
    pub fn stalled_tenants(&self) -> Vec<TenantId> {
        let routes = self.routes.lock().expect("pools lock");
        self.tenants
            .lock()
            .expect("pools lock")
            .iter()
            .filter(|(_, key)| routes.get(*key).is_some_and(|pool| pool.is_stalled()))
            .map(|(tenant, _)| *tenant)
            .collect()
    }

    /// Closes idle connections past their timeout in every pool.
    pub fn sweep(&self) {
        for pool in self.routes.lock().expect("pools lock").values() {
            pool.sweep();
        }
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
    use herald_smtp::{Target, Timeouts, TlsSettings};
    use herald_testsmtp::{SessionEnd, TestSmtpServer};

    /// A fresh connection to the test server, as the worker would lease it.
    async fn lease(server: &TestSmtpServer, sent: u32) -> Lease {
        let target = Target {
            host: SmtpHost::parse("127.0.0.1").unwrap(),
            port: Port::new(server.port().into()).unwrap(),
            security: Security::None,
            tls: TlsSettings::default(),
            helo_name: "herald.test".into(),
            timeouts: Timeouts::default(),
            egress: None,
            allow_plaintext_auth: false,
        };
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

    fn one_connection() -> RoutePool {
        RoutePool::new(PoolLimits {
            max_connections: 1,
            ..PoolLimits::default()
        })
    }

    /// Polls `condition` until it holds, failing after a generous deadline.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_route_with_its_slots_held_stalls_and_recovers_when_one_frees() {
        let pool = one_connection();
        assert!(!pool.is_stalled(), "a free slot means not stalled");
        let slot = pool.slot_within(Duration::from_secs(1)).await.unwrap();
        until("the held slot to make the route stalled", || {
            pool.is_stalled()
        })
        .await;
        assert!(pool.slot_within(Duration::from_millis(1)).await.is_none());
        drop(slot);
        assert!(!pool.is_stalled(), "a free slot means not stalled");
    }

    #[tokio::test]
    async fn stalled_tenants_are_those_of_stalled_routes() {
        let pools = Pools::default();
        let (slow, fast) = (TenantId::new(), TenantId::new());
        let limits = PoolLimits {
            max_connections: 1,
            ..PoolLimits::default()
        };
        let held = pools
            .get("slow", limits, slow)
            .slot_within(Duration::from_secs(1))
            .await
            .unwrap();
        pools.get("fast", limits, fast);
        until("the slow route to stall", || {
            !pools.stalled_tenants().is_empty()
        })
        .await;
        assert_eq!(pools.stalled_tenants(), vec![slow]);
        drop(held);
        assert!(pools.stalled_tenants().is_empty());
    }
}
