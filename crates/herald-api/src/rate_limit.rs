//! A token bucket per account: `requests_per_second` refill, up to `burst` saved up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    /// Generous: it guards the server against one runaway tenant, not normal traffic.
    fn default() -> Self {
        Self {
            requests_per_second: 25_000.0,
            burst: 50_000.0,
        }
    }
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `account`; `Err(seconds)` says when to retry when none is left.
    pub fn check(&self, account: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let bucket = buckets.entry(account.to_owned()).or_insert(Bucket {
            tokens: self.limit.burst,
            refilled_at: now,
        });
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * self.limit.requests_per_second).min(self.limit.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait =
                (1.0 - bucket.tokens) / self.limit.requests_per_second.max(f64::MIN_POSITIVE);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_is_per_account() {
        let limiter = RateLimiter::new(RateLimit {
            requests_per_second: 0.5,
            burst: 2.0,
        });
        assert!(limiter.check("AC1").is_ok());
        assert!(limiter.check("AC1").is_ok());
        assert_eq!(limiter.check("AC1"), Err(2));
        assert!(limiter.check("AC2").is_ok());
    }
}
