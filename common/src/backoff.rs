//! [`Backoff`]: the delays between a retry loop's attempts, doubling from a
//! first delay up to a cap. Pure: the caller sleeps (`tokio::time::sleep`)
//! for what it returns, so every retry loop in cellkv shares one policy shape.

use std::time::{Duration, Instant};

/// Exponential back-off: `first`, `2·first`, `4·first`, … capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`; never returns more than `max` (nor less than `first`
    /// unless a deadline is closer).
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the next one doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Like [`next_delay`](Self::next_delay), but never past `deadline`
    /// (zero once it has passed).
    pub fn next_delay_within(&mut self, deadline: Instant) -> Duration {
        self.next_delay()
            .min(deadline.saturating_duration_since(Instant::now()))
    }

    /// Back to the first delay (after a success, or progress).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay the next call will return.
    pub fn peek(&self) -> Duration {
        self.next.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(25), ms(150));
        let seen: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [ms(25), ms(50), ms(100), ms(150), ms(150)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(25));
        assert_eq!(b.peek(), ms(50));
    }

    #[test]
    fn never_waits_past_a_deadline() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(5));
        let d = b.next_delay_within(Instant::now() + Duration::from_millis(10));
        assert!(d <= Duration::from_millis(10), "{d:?}");
        assert_eq!(b.next_delay_within(Instant::now()), Duration::ZERO);
    }
}
