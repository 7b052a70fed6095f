//! The listener's node-local limits: sessions per client address, messages
//! per minute per credential or connector, and failed AUTH per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Sender;

/// The client a limit counts: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's network, RFC 6177: a host there has addresses to spare).
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// Past this many remembered addresses, those with nothing to remember are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Sessions open now, per client address.
#[derive(Debug, Default)]
pub(crate) struct SessionsPerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open session; dropping it frees its place.
pub(crate) struct SessionSlot {
    sessions: Arc<SessionsPerIp>,
    ip: IpAddr,
}

impl SessionsPerIp {
    /// A place for one more session from `ip`, unless it has `max` open.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SessionSlot> {
        let ip = client(ip);
        let mut open = self
            .open
            .lock()
            .expect("the session count is never poisoned");
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            sessions: self.clone(),
            ip,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self
            .sessions
            .open
            .lock()
            .expect("the session count is never poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A token bucket per credential or connector: as many messages at once as
/// a minute's allowance, refilled evenly over the minute.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<Sender, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes one message from `sender`'s allowance of `per_minute`; false
    /// when it has none left.
    pub fn take(&self, sender: &Sender, per_minute: u32) -> bool {
        let now = Instant::now();
        let capacity = f64::from(per_minute);
        let mut buckets = self.buckets.lock().expect("the buckets are never poisoned");
        let bucket = buckets.entry(sender.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * capacity / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Failed AUTH attempts per client address.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    seen: Mutex<HashMap<IpAddr, Failures>>,
    max: u32,
    window: Duration,
    block: Duration,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl AuthFailures {
    /// `max` failures within `window` block AUTH from the address for `block`.
    pub fn new(max: u32, window: Duration, block: Duration) -> AuthFailures {
        AuthFailures {
            seen: Mutex::default(),
            max: max.max(1),
            window,
            block,
        }
    }

    /// Whether AUTH from `ip` is refused now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let ip = client(ip);
        let now = Instant::now();
        let seen = self.seen.lock().expect("the failures are never poisoned");
        seen.get(&ip)
            .and_then(|f| f.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// Counts a failure from `ip`; true when it now is blocked.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let ip = client(ip);
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("the failures are never poisoned");
        if seen.len() > PRUNE_ABOVE {
            let window = self.window;
            seen.retain(|_, f| {
                f.blocked_until.is_some_and(|until| until > now)
                    || now.duration_since(f.since) < window
            });
        }
        let failures = seen.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
            blocked_until: None,
        });
        if now.duration_since(failures.since) >= self.window {
            failures.count = 0;
            failures.since = now;
        }
        failures.count += 1;
        if failures.count >= self.max {
            failures.blocked_until = Some(now + self.block);
            failures.count = 0;
            failures.since = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_per_address() {
        let sessions = Arc::new(SessionsPerIp::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = sessions.enter(a, 2).unwrap();
        let _second = sessions.enter(a, 2).unwrap();
        assert!(sessions.enter(a, 2).is_none());
        assert!(sessions.enter(b, 2).is_some());
        drop(first);
        assert!(sessions.enter(a, 2).is_some());
    }

    #[test]
    fn a_minute_allowance_at_once() {
        let limits = RateLimits::default();
        let sender = Sender::Credential("c1".into());
        assert!(limits.take(&sender, 3));
        assert!(limits.take(&sender, 3));
        assert!(limits.take(&sender, 3));
        assert!(!limits.take(&sender, 3));
        assert!(limits.take(&Sender::Connector("c1".into()), 3));
    }

    #[test]
    fn failures_block() {
        let failures = AuthFailures::new(3, Duration::from_secs(300), Duration::from_secs(600));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!failures.failed(ip));
        assert!(!failures.failed(ip));
        assert!(!failures.blocked(ip));
        assert!(failures.failed(ip));
        assert!(failures.blocked(ip));
        // Another address of the same /64 is the same client; another /64 is not.
        assert!(failures.blocked("2001:db8::2".parse().unwrap()));
        assert!(!failures.blocked("2001:db8:0:1::1".parse().unwrap()));
    }
}
