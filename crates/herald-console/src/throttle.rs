//! Failed sign-ins, counted per address on each node: after a few, the address
//! is locked out for a while that doubles with each further failure.

use std::collections::HashMap;
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
}
