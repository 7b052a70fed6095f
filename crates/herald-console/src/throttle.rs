//! Sign-in throttles of each node: failed sign-ins counted per e-mail address
//! (after a few, the address is locked out for a while that doubles with each
//! further failure), and sign-in attempts per client address (a rate).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have before it is locked out.
const FREE_FAILURES: u32 = 5;
/// The first lockout; each further failure doubles it, up to [`LONGEST`].
const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
const LONGEST: Duration = Duration::from_secs(15 * 60);
/// An address whose last failure is older than this starts again from nothing.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Addresses remembered at most; beyond, the forgotten ones are dropped first.
const REMEMBERED: usize = 10_000;

/// The failed sign-ins of one node, keyed by lower-cased address.
#[derive(Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long after the last failure the address stays locked out.
    fn lockout(self) -> Duration {
        if self.count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (self.count - FREE_FAILURES).min(10);
        (FIRST_LOCKOUT * 2u32.pow(doublings)).min(LONGEST)
    }
}

impl SignInThrottle {
    /// How much longer `address` is locked out at `now`, if it is.
    pub fn locked_for(&self, address: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("throttle lock");
        let entry = failures.get(&address.to_lowercase())?;
        let until = entry.last + entry.lockout();
        (until > now).then(|| until - now)
    }

    /// Counts a failed sign-in for `address` at `now`.
    pub fn failed(&self, address: &str, now: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= REMEMBERED {
            failures.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        let entry = failures.entry(address.to_lowercase()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
    }

    /// Forgets the failures of an address that signed in.
    pub fn succeeded(&self, address: &str) {
        self.failures
            .lock()
            .expect("throttle lock")
            .remove(&address.to_lowercase());
    }
}

/// Sign-in attempts per client address: `burst` at once, then one more each
/// `every` (a token bucket, kept as the time the bucket is full again).
pub struct ClientRate {
    burst: u32,
    every: Duration,
    full_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl ClientRate {
    pub fn new(burst: u32, every: Duration) -> Self {
        ClientRate {
            burst: burst.max(1),
            every,
            full_at: Mutex::default(),
        }
    }

    /// Counts an attempt from `client` at `now`, or says how long it must wait.
    pub fn attempt(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = Self::key(client);
        let mut full_at = self.full_at.lock().expect("rate lock");
        if full_at.len() >= REMEMBERED {
            full_at.retain(|_, at| *at > now);
        }
        let at = full_at.get(&key).copied().unwrap_or(now).max(now);
        // The bucket holds `burst` attempts: one more is allowed while fewer
        // than that are still being paid off.
        let tolerance = self.every * (self.burst - 1);
        if at > now + tolerance {
            return Err(at - (now + tolerance));
        }
        full_at.insert(key, at + self.every);
        Ok(())
    }

    /// The key a client is counted under: an IPv6 client usually has a whole
    /// /64 to itself, so it is counted by that prefix.
    fn key(client: IpAddr) -> IpAddr {
        match client.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            v4 => v4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_five_failures_for_a_doubling_while() {
        let throttle = SignInThrottle::default();
        let start = Instant::now();
        for _ in 0..4 {
            throttle.failed("Ada@Example.com", start);
            assert_eq!(throttle.locked_for("ada@example.com", start), None);
        }
        throttle.failed("ada@example.com", start);
        assert_eq!(
            throttle.locked_for("ADA@example.com", start),
            Some(FIRST_LOCKOUT)
        );
        let later = start + FIRST_LOCKOUT;
        assert_eq!(throttle.locked_for("ada@example.com", later), None);
        throttle.failed("ada@example.com", later);
        assert_eq!(
            throttle.locked_for("ada@example.com", later),
            Some(FIRST_LOCKOUT * 2)
        );
        // Others are not affected; a success forgets the failures.
        assert_eq!(throttle.locked_for("bob@example.com", later), None);
        throttle.succeeded("ada@example.com");
        assert_eq!(throttle.locked_for("ada@example.com", later), None);
    }

    #[test]
    fn lockouts_stop_growing_and_old_failures_are_forgotten() {
        let throttle = SignInThrottle::default();
        let start = Instant::now();
        for _ in 0..40 {
            throttle.failed("ada@example.com", start);
        }
        assert_eq!(throttle.locked_for("ada@example.com", start), Some(LONGEST));
        let much_later = start + FORGET_AFTER;
        throttle.failed("ada@example.com", much_later);
        assert_eq!(throttle.locked_for("ada@example.com", much_later), None);
    }

    #[test]
    fn a_client_gets_a_burst_then_one_attempt_each_interval() {
        let every = Duration::from_secs(6);
        let rate = ClientRate::new(3, every);
        let start = Instant::now();
        let ada: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(rate.attempt(ada, start), Ok(()));
        }
        assert_eq!(rate.attempt(ada, start), Err(every));
        // Others are not affected.
        assert_eq!(rate.attempt("198.51.100.8".parse().unwrap(), start), Ok(()));
        // One interval later, one more attempt; the refusal says how long to wait.
        let later = start + every;
        assert_eq!(rate.attempt(ada, later), Ok(()));
        assert_eq!(rate.attempt(ada, later), Err(every));
        assert_eq!(
            rate.attempt(ada, later + Duration::from_secs(2)),
            Err(Duration::from_secs(4))
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix() {
        let rate = ClientRate::new(1, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(
            rate.attempt("2001:db8:1:2::1".parse().unwrap(), now),
            Ok(())
        );
        assert!(
            rate.attempt("2001:db8:1:2::ffff".parse().unwrap(), now)
                .is_err()
        );
        assert_eq!(
            rate.attempt("2001:db8:1:3::1".parse().unwrap(), now),
            Ok(())
        );
    }
}
