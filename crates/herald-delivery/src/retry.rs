//! When to try again: exponential backoff with jitter, and the age after which a message fails.

use std::time::Duration;

use rand::Rng;

/// The node's retry policy.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The delay after the first failed attempt.
    pub base: Duration,
    /// The longest delay between two attempts.
    pub max: Duration,
    /// How long after submission a still-undelivered recipient fails.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            max_age: Duration::from_secs(2 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, doubling each time up to
    /// [`Self::max`], spread by ±20 % so that recipients deferred together do
    /// not all come back at the same instant.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`Self::delay_after`], spread with `rng`: the outcome policy's tests
    /// give a seeded one.
    pub fn delay_with(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        let delay = self.base.saturating_mul(doubling).min(self.max);
        delay.mul_f64(rng.random_range(0.8..=1.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_within_bounds() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
            max_age: Duration::from_secs(1000),
        };
        for (attempt, nominal) in [
            (1, 10.0),
            (2, 20.0),
            (3, 40.0),
            (4, 80.0),
            (5, 100.0),
            (40, 100.0),
        ] {
            let d = policy.delay_after(attempt).as_secs_f64();
            assert!(
                (nominal * 0.8..=nominal * 1.2).contains(&d),
                "attempt {attempt}: {d}s"
            );
        }
    }
}
