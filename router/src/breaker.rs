//! `Breaker`: one cell's circuit breaker as a pure state machine on an
//! injected clock. It decides whether a request may go to the cell; the
//! health checker and request outcomes feed it. Locking, logging and metrics
//! are the caller's (`CellClient`).
//!
//! ```text
//!            failure_threshold consecutive failures,
//!            or an unhealthy health check
//!   Closed ───────────────────────────────────────▶ Open ◀──────────┐
//!     ▲                                               │ open_duration│ a failure or an
//!     │ recovery_successes consecutive healthy checks ▼  has passed  │ unhealthy check
//!     └────────────────────────────────────────── HalfOpen ─────────┘
//!                                       (one probe request at a time)
//! ```
//!
//! Only the health checker closes a breaker: one lucky request to a flapping
//! cell proves little, N consecutive healthy checks are the hysteresis.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

/// The externally visible state; `as_gauge` is the metric value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// A request the breaker let through. A probe is the single request allowed
/// while half-open; its number tells a late outcome from a stale period apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Normal,
    Probe(u64),
}

/// Why the breaker refused a request (no network I/O was done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Open: fails fast until `retry_after` from now.
    Open { retry_after: Duration },
    /// Half-open and the one probe is already in flight.
    ProbeInFlight,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    failure_threshold: u32,
    open_duration: Duration,
    recovery_successes: u32,
    state: BreakerState,
    /// Consecutive failed requests while closed.
    failures: u32,
    /// Consecutive healthy checks since the last bad signal.
    healthy_streak: u32,
    /// While open: when half-open begins.
    open_until: Instant,
    /// The probe in flight while half-open, by number.
    probe: Option<u64>,
    next_probe: u64,
}

impl Breaker {
    /// A closed breaker: a cell is presumed usable until a check or a request says otherwise.
    pub fn new(cfg: &BreakerConfig, now: Instant) -> Breaker {
        Breaker {
            failure_threshold: cfg.failure_threshold.max(1),
            open_duration: cfg.open_duration,
            recovery_successes: cfg.recovery_successes.max(1),
            state: BreakerState::Closed,
            failures: 0,
            healthy_streak: 0,
            open_until: now,
            probe: None,
            next_probe: 0,
        }
    }

    /// The state at `now` (an expired open period reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        self.tick(now);
        self.state
    }

    fn tick(&mut self, now: Instant) {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.state = BreakerState::HalfOpen;
            self.probe = None;
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.open_until = now + self.open_duration;
        self.failures = 0;
        self.healthy_streak = 0;
        self.probe = None;
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.probe = None;
    }

    fn finish_probe(&mut self, admit: Admit) {
        if let Admit::Probe(n) = admit {
            if self.probe == Some(n) {
                self.probe = None;
            }
        }
    }

    /// Lets a request through or refuses it. Never blocks, never does I/O.
    pub fn admit(&mut self, now: Instant) -> Result<Admit, Rejected> {
        self.tick(now);
        match self.state {
            BreakerState::Closed => Ok(Admit::Normal),
            BreakerState::Open => Err(Rejected::Open {
                retry_after: self.open_until.saturating_duration_since(now),
            }),
            BreakerState::HalfOpen => {
                if self.probe.is_some() {
                    return Err(Rejected::ProbeInFlight);
                }
                let n = self.next_probe;
                self.next_probe += 1;
                self.probe = Some(n);
                Ok(Admit::Probe(n))
            }
        }
    }

    /// The request got an answer that shows the cell works (2xx–4xx).
    pub fn on_success(&mut self, admit: Admit) {
        self.finish_probe(admit);
        if self.state == BreakerState::Closed {
            self.failures = 0;
        }
    }

    /// The request failed because of the cell (connect error, timeout, 5xx).
    pub fn on_failure(&mut self, admit: Admit, now: Instant) {
        self.finish_probe(admit);
        self.tick(now);
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => self.open(now),
            // Admitted before the breaker opened; it says nothing new.
            BreakerState::Open => {}
        }
    }

    /// The request ended without an outcome (client went away, router-side refusal).
    pub fn on_cancel(&mut self, admit: Admit) {
        self.finish_probe(admit);
    }

    /// One round of the health checker: `healthy` if some replica is a leader
    /// with a reachable quorum.
    pub fn on_health(&mut self, healthy: bool, now: Instant) {
        self.tick(now);
        if healthy {
            self.healthy_streak = self.healthy_streak.saturating_add(1);
            if self.state == BreakerState::HalfOpen
                && self.healthy_streak >= self.recovery_successes
            {
                self.close();
            }
        } else {
            self.healthy_streak = 0;
            match self.state {
                BreakerState::Closed | BreakerState::HalfOpen => self.open(now),
                BreakerState::Open => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_duration: Duration::from_secs(2),
            recovery_successes: 3,
            ..BreakerConfig::default()
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        assert_eq!(b.admit(t0), Ok(Admit::Normal));
        b.on_failure(Admit::Normal, t0);
        b.on_failure(Admit::Normal, t0);
        b.on_success(Admit::Normal); // resets the count
        b.on_failure(Admit::Normal, t0);
        b.on_failure(Admit::Normal, t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(Admit::Normal, ms(t0, 10));
        assert_eq!(b.state(ms(t0, 10)), BreakerState::Open);
        assert_eq!(
            b.admit(ms(t0, 510)),
            Err(Rejected::Open {
                retry_after: Duration::from_millis(1500)
            })
        );
    }

    #[test]
    fn an_unhealthy_check_opens_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(true, t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_health(false, t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(matches!(b.admit(t0), Err(Rejected::Open { .. })));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_a_failure_reopens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        assert_eq!(b.state(ms(t0, 1999)), BreakerState::Open);
        let t = ms(t0, 2000);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let probe = b.admit(t).expect("probe");
        assert!(matches!(probe, Admit::Probe(_)));
        assert_eq!(b.admit(t), Err(Rejected::ProbeInFlight));
        b.on_failure(probe, ms(t0, 2100));
        assert_eq!(b.state(ms(t0, 2100)), BreakerState::Open);
        assert_eq!(
            b.admit(ms(t0, 2100)),
            Err(Rejected::Open {
                retry_after: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn a_probe_success_frees_the_slot_but_does_not_close() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        let t = ms(t0, 2000);
        let probe = b.admit(t).expect("probe");
        b.on_success(probe);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let probe2 = b.admit(t).expect("a second probe after the first finished");
        b.on_cancel(probe2);
        assert!(b.admit(t).is_ok(), "a cancelled probe frees the slot");
    }

    #[test]
    fn closing_needs_consecutive_healthy_checks() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        let t = ms(t0, 2500);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        b.on_health(true, t);
        b.on_health(true, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        // A bad check in between starts over (and reopens).
        b.on_health(false, t);
        assert_eq!(b.state(t), BreakerState::Open);
        let t = ms(t0, 5000);
        b.on_health(true, t);
        b.on_health(true, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        b.on_health(true, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.admit(t), Ok(Admit::Normal));
    }

    #[test]
    fn healthy_checks_while_open_count_but_do_not_skip_the_open_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        for i in 1..=4 {
            b.on_health(true, ms(t0, i * 400));
        }
        assert_eq!(
            b.state(ms(t0, 1600)),
            BreakerState::Open,
            "open_duration is honoured"
        );
        b.on_health(true, ms(t0, 2000));
        assert_eq!(b.state(ms(t0, 2000)), BreakerState::Closed);
    }

    #[test]
    fn stale_outcomes_do_not_disturb_a_new_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        let old = b.admit(ms(t0, 2000)).expect("probe");
        // The breaker reopens (unhealthy) and half-opens again with a new probe.
        b.on_health(false, ms(t0, 2100));
        let new = b.admit(ms(t0, 4100)).expect("new probe");
        assert_ne!(old, new);
        b.on_cancel(old);
        assert_eq!(
            b.admit(ms(t0, 4100)),
            Err(Rejected::ProbeInFlight),
            "the old probe must not free the new slot"
        );
        // A failure of a request admitted before opening says nothing new.
        let mut b = Breaker::new(&cfg(), t0);
        b.on_health(false, t0);
        b.on_failure(Admit::Normal, ms(t0, 1000));
        assert_eq!(
            b.admit(ms(t0, 1000)),
            Err(Rejected::Open {
                retry_after: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn gauge_values() {
        assert_eq!(BreakerState::Closed.as_gauge(), 0);
        assert_eq!(BreakerState::HalfOpen.as_gauge(), 1);
        assert_eq!(BreakerState::Open.as_gauge(), 2);
    }
}
