//! `TokenBucket`: the per-client-token rate limiter. Pure arithmetic on an
//! injected clock (`now` is a parameter), so the refill is testable without
//! sleeping; callers own the lock and the clock.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: holds at most `burst` tokens, refills at `rate` per second,
/// and every request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at time `now`. `rate` must be > 0 and `burst` >= 1
    /// (checked by `RouterConfig::validate`).
    pub fn new(rate_per_sec: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate_per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        // A clock that goes backwards (never with Instant, but cheap to guard)
        // adds nothing rather than removing tokens.
        let elapsed = now.saturating_duration_since(self.last);
        if !elapsed.is_zero() {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Tokens available at `now` (for tests and introspection).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(100));
        // 50 ms later: half a token, still refused, and the wait shrinks.
        let wait = b
            .try_take(t0 + Duration::from_millis(50))
            .expect_err("half a token");
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-9, "{wait:?}");
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 5, t0);
        assert!(b.try_take(t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.available(later), 5.0);
        for _ in 0..5 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn earlier_now_does_not_drain() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 2, t0 + Duration::from_secs(5));
        assert_eq!(b.available(t0), 2.0);
    }

    #[tokio::test]
    async fn refills_on_the_tokio_clock() {
        let mut b = TokenBucket::new(20.0, 1, Instant::now());
        assert!(b.try_take(Instant::now()).is_ok());
        assert!(b.try_take(Instant::now()).is_err());
        // 20 tokens a second: one more after 50 ms.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.try_take(Instant::now()).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
