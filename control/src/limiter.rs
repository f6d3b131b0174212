//! A token bucket on copied bytes: a job's bulk copy takes tokens for every
//! page it ingests and sleeps when it runs ahead of its bandwidth. The
//! bucket holds at most one second of tokens, so a job resumed after a pause
//! does not burst far above its rate.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// `bytes_per_sec` > 0.
    pub fn new(bytes_per_sec: u64, now: Instant) -> Limiter {
        let rate = bytes_per_sec.max(1) as f64;
        Limiter {
            rate,
            capacity: rate,
            tokens: rate,
            last: now,
        }
    }

    pub fn set_rate(&mut self, bytes_per_sec: u64) {
        self.rate = bytes_per_sec.max(1) as f64;
        self.capacity = self.rate;
        self.tokens = self.tokens.min(self.capacity);
    }

    /// Takes `bytes` tokens (going into debt if needed) and says how long
    /// to wait before the next transfer so the average stays at the rate.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_average_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1000, t0);
        // One second of burst is free.
        assert_eq!(l.take(1000, t0), Duration::ZERO);
        // Beyond it, each 500 bytes costs half a second.
        assert_eq!(l.take(500, t0), Duration::from_millis(500));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.take(500, t1), Duration::from_millis(500));
        // After a long idle period the bucket is full, never fuller.
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!(l.take(1000, t2), Duration::ZERO);
        assert!(l.take(1, t2) > Duration::ZERO);
        // Simulated copy: 10 kB at 1 kB/s takes about 9 s after the initial burst.
        let mut l = Limiter::new(1000, t0);
        let mut now = t0;
        for _ in 0..100 {
            now += l.take(100, now);
        }
        let secs = now.duration_since(t0).as_secs_f64();
        assert!((secs - 9.0).abs() < 0.2, "{secs}");
        l.set_rate(10);
        assert!(l.take(100, now) >= Duration::from_secs(9));
    }
}
