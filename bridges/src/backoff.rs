//! The one retry backoff herald uses everywhere (sink deliveries, IRC reconnects, IMAP
//! reconnects): capped exponential with full jitter above a floor.
//!
//! Retry number `n` (0-based) waits a uniformly random time between `min` and
//! `min × 2^n` capped at `max`. Full jitter spreads the retries of many rows or many herald
//! instances instead of having them arrive together (Vector's `JitterMode::Full`); the floor
//! means a retry never comes back at once.

use std::time::Duration;

/// Capped exponential backoff with full jitter; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's delay, and the floor of every later one.
    pub min: Duration,
    /// The ceiling.
    pub max: Duration,
}

impl Backoff {
    /// From `min` to `max` (a `max` below `min` is taken as `min`).
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max }
    }

    /// The wait before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.max)
            .max(self.min);
        let low = u64::try_from(self.min.as_millis()).unwrap_or(u64::MAX);
        let high = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(low..=high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_min_to_max_with_jitter() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for attempt in 0..50 {
            let ceiling = Duration::from_secs((1u64 << attempt.min(20)).min(300));
            for _ in 0..20 {
                let d = b.delay(attempt);
                assert!(d >= b.min && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(b.delay(0), b.min, "the first retry waits exactly the floor");
        let spread: std::collections::HashSet<_> = (0..50).map(|_| b.delay(8)).collect();
        assert!(spread.len() > 10, "jittered");
    }

    #[test]
    fn max_below_min_is_min() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.delay(10), Duration::from_secs(5));
    }
}
