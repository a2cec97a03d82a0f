//! Retry policy: exponential backoff with full jitter, honouring the provider's `Retry-After`.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay (the delay is drawn from `0..=ceiling`).
    pub first_delay: Duration,
    /// The ceiling doubles with every attempt up to this.
    pub max_delay: Duration,
    /// Attempts in all (the first send included); a notification still failing after this many
    /// fails with `retries-exhausted`.
    pub max_attempts: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after failed attempt number `attempt` (1-based).
    pub fn ceiling(&self, attempt: i64) -> Duration {
        let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
        self.first_delay
            .saturating_mul(1_u32 << doublings)
            .min(self.max_delay)
    }

    /// The delay before the next attempt after failed attempt `attempt`: full jitter
    /// (uniform in `0..=ceiling`), but never sooner than the provider's `Retry-After`.
    pub fn delay(&self, attempt: i64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let jitter = Duration::from_millis(rand::rng().random_range(0..=ceiling));
        match retry_after {
            Some(after) => jitter.max(after),
            None => jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_secs(1));
        assert_eq!(policy.ceiling(2), Duration::from_secs(2));
        assert_eq!(policy.ceiling(5), Duration::from_secs(16));
        assert_eq!(policy.ceiling(9), Duration::from_secs(256));
        assert_eq!(policy.ceiling(10), Duration::from_secs(300));
        assert_eq!(policy.ceiling(1000), Duration::from_secs(300));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling_and_honour_retry_after() {
        let policy = RetryPolicy::default();
        for attempt in 1..12 {
            for _ in 0..50 {
                assert!(policy.delay(attempt, None) <= policy.ceiling(attempt));
            }
        }
        let after = Duration::from_secs(30);
        for _ in 0..50 {
            let d = policy.delay(1, Some(after));
            assert!(d >= after && d <= Duration::from_secs(30));
        }
    }
}
