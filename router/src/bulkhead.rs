//! `Bulkhead`: a semaphore of in-flight slots plus a bounded, time-limited
//! wait queue. One per cell (so a slow or dead cell can hold at most its own
//! share of the router) and one global. Refusals are immediate when the
//! queue is full, so a saturated cell costs its callers no waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    #[error("every slot is taken and the wait queue is full")]
    QueueFull,
    #[error("no slot freed up within the queue timeout")]
    QueueTimeout,
}

/// Gauges a bulkhead keeps current (each optional, so unit tests need no registry).
#[derive(Clone, Default)]
pub struct BulkheadGauges {
    pub in_flight: Option<IntGauge>,
    pub queue_depth: Option<IntGauge>,
}

pub struct Bulkhead {
    /// Tokio's semaphore is fair (FIFO), so waiters are served in arrival order.
    slots: Arc<Semaphore>,
    capacity: usize,
    /// Callers waiting for a slot. An atomic counter rather than the
    /// semaphore's own queue so a full queue is refused without waiting.
    waiting: AtomicUsize,
    max_queue: usize,
    gauges: BulkheadGauges,
}

/// A granted slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Option<IntGauge>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.in_flight {
            g.dec();
        }
    }
}

/// Decrements the waiter count however the wait ends (granted, timed out or cancelled).
struct Waiting<'a>(&'a Bulkhead);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.0.gauges.queue_depth {
            g.dec();
        }
    }
}

impl Bulkhead {
    /// `capacity` slots (>= 1) and at most `max_queue` waiters (0: never wait).
    pub fn new(capacity: usize, max_queue: usize, gauges: BulkheadGauges) -> Bulkhead {
        Bulkhead {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            waiting: AtomicUsize::new(0),
            max_queue,
            gauges,
        }
    }

    fn granted(&self, permit: OwnedSemaphorePermit) -> Slot {
        let in_flight = self.gauges.in_flight.clone();
        if let Some(g) = &in_flight {
            g.inc();
        }
        Slot {
            _permit: permit,
            in_flight,
        }
    }

    /// Takes a slot, waiting at most `timeout` in the queue if there is room
    /// in it. Cancellation-safe: dropping the future leaves the queue count right.
    pub async fn acquire(&self, timeout: Duration) -> Result<Slot, BulkheadError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(self.granted(p));
        }
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.max_queue).then_some(w + 1)
            })
            .map_err(|_| BulkheadError::QueueFull)?;
        if let Some(g) = &self.gauges.queue_depth {
            g.inc();
        }
        let _waiting = Waiting(self);
        match tokio::time::timeout(timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(self.granted(p)),
            // The semaphore is never closed; treat it like a timeout if it ever is.
            Ok(Err(_)) | Err(_) => Err(BulkheadError::QueueTimeout),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_fails_fast() {
        let b = Arc::new(Bulkhead::new(2, 1, BulkheadGauges::default()));
        let s1 = b.acquire(Duration::from_secs(1)).await.unwrap();
        let _s2 = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(b.in_flight(), 2);
        // A third caller waits in the queue...
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.acquire(Duration::from_secs(10)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        // ...and a fourth is refused at once, without waiting.
        let start = tokio::time::Instant::now();
        assert_eq!(
            b.acquire(Duration::from_secs(10)).await.err(),
            Some(BulkheadError::QueueFull)
        );
        assert!(start.elapsed() < Duration::from_secs(1), "refused at once");
        drop(s1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test]
    async fn waiting_too_long_times_out() {
        let b = Bulkhead::new(1, 4, BulkheadGauges::default());
        let _s = b.acquire(Duration::from_secs(1)).await.unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(
            b.acquire(Duration::from_millis(200)).await.err(),
            Some(BulkheadError::QueueTimeout)
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(b.queued(), 0, "a timed-out waiter leaves the queue");
    }

    #[tokio::test]
    async fn zero_queue_never_waits_and_cancelled_waiters_leave() {
        let b = Arc::new(Bulkhead::new(1, 0, BulkheadGauges::default()));
        let _s = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            b.acquire(Duration::from_secs(1)).await.err(),
            Some(BulkheadError::QueueFull)
        );

        let b = Arc::new(Bulkhead::new(1, 1, BulkheadGauges::default()));
        let s = b.acquire(Duration::from_secs(1)).await.unwrap();
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.acquire(Duration::from_secs(10)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(b.queued(), 0, "a cancelled waiter leaves the queue");
        drop(s);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test]
    async fn gauges_track_slots_and_waiters() {
        let (in_flight, queue) = (
            IntGauge::new("f", "f").unwrap(),
            IntGauge::new("q", "q").unwrap(),
        );
        let g = BulkheadGauges {
            in_flight: Some(in_flight.clone()),
            queue_depth: Some(queue.clone()),
        };
        let b = Bulkhead::new(1, 1, g);
        let s = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(in_flight.get(), 1);
        assert_eq!(
            b.acquire(Duration::from_millis(10)).await.err(),
            Some(BulkheadError::QueueTimeout)
        );
        assert_eq!(queue.get(), 0);
        drop(s);
        assert_eq!(in_flight.get(), 0);
    }
}
