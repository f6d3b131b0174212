//! Batches concurrent client writes into one Raft entry. openraft 0.9 appends
//! (and fsyncs) one client request at a time, so without batching every write
//! costs one fsync on every replica in series. The proposer sends the next
//! entry as soon as the local log has fsynced the previous one (`FlushGate`):
//! writes arriving during an fsync leave together in the next entry, so the
//! busier the cell, the larger the batch, and an idle cell adds no delay.
//!
//! ```text
//!  handlers ─op─▶ [bounded queue] ─▶ proposer task: wait for a free slot and
//!                                    for the log's previous fsync, take every
//!                                    queued op (≤ MAX_BATCH_*),
//!                                    client_write_ff(Request{ops}) ─▶ Raft
//!                                    on commit+apply: reply to each op
//! ```
//!
//! Every submission to Raft happens under the [`WriteGate`], which a
//! leadership transfer (`transfer.rs`) closes for a few milliseconds: while it
//! is closed, new batches wait in the queue (nothing is dropped) and entries
//! already proposed finish as usual.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard, RwLock, RwLockReadGuard, Semaphore};

use crate::log_store::FlushGate;
use crate::metrics::CellMetrics;
use crate::types::{OpResult, Raft, ReplicaNode, Request, Response, WriteOp};

/// Entries proposed but not yet applied. Bounds memory and, with the flush
/// gate, lets replication and apply of earlier entries overlap the next fsync.
const MAX_IN_FLIGHT: usize = 8;
/// Longest wait for the previous entry's fsync before sending anyway (a
/// follower-only or stuck log must not stall proposals forever).
const MAX_GATE_WAIT: Duration = Duration::from_millis(20);
/// Most ops in one entry: bounds the apply batch and AppendEntries size.
const MAX_BATCH_OPS: usize = 1024;
/// Most bytes in one entry (values dominate); one large object still goes
/// alone. Defined with the config schema, whose Raft body limit depends on it.
pub use common::config::cell::MAX_BATCH_BYTES;
/// Writes waiting for a batch. Bounded: when full, handlers wait (back-pressure).
const QUEUE_CAPACITY: usize = 16_384;

/// Why a proposed write has no result.
#[derive(Clone, Debug)]
pub enum ProposeError {
    /// Not the leader; the write was not executed. Retry at this leader (if known).
    NotLeader { leader: Option<(u64, ReplicaNode)> },
    /// Raft refused the entry for another reason; the write was not executed.
    Rejected(String),
    /// Raft stopped; the write's outcome is unknown.
    Stopped(String),
}

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<Result<(OpResult, u64), ProposeError>>,
}

/// Holds new log entries back from Raft while a leadership transfer runs.
///
/// Every submission of a client or admin write to Raft happens inside
/// [`enter`](Self::enter) (a channel send to the Raft core: microseconds).
/// [`pause`](Self::pause) waits for the submissions already inside and then
/// holds every later one until its guard is dropped. Callers wait; nothing
/// is dropped or failed here.
pub struct WriteGate {
    /// Read side: one submission. Write side: a pause. tokio's `RwLock` is
    /// fair (FIFO), so a pause waits only for the submissions already inside,
    /// and submissions that arrive after a pause asked for it queue behind it.
    lock: Arc<RwLock<()>>,
    metrics: Arc<CellMetrics>,
}

impl WriteGate {
    pub fn new(metrics: Arc<CellMetrics>) -> WriteGate {
        WriteGate {
            lock: Arc::new(RwLock::new(())),
            metrics,
        }
    }

    /// Lets one submission through; waits while a pause holds the gate.
    /// Hold the guard only around the send to Raft, never while waiting for
    /// the entry to commit. Cancellation-safe.
    pub async fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// Closes the gate until the returned guard is dropped. Waits only for
    /// submissions already inside. Cancellation-safe.
    pub async fn pause(&self) -> WritePause {
        let held = self.lock.clone().write_owned().await;
        WritePause {
            _held: held,
            since: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }

    /// Whether a pause holds the gate now.
    pub fn is_paused(&self) -> bool {
        self.lock.try_read().is_err()
    }
}

/// A closed [`WriteGate`]: writes resume when this is dropped, on every
/// path (success, error, timeout, or the request being abandoned), and the
/// pause is recorded in `cellkv_cell_leader_transfer_write_pause_seconds`.
pub struct WritePause {
    _held: OwnedRwLockWriteGuard<()>,
    since: Instant,
    metrics: Arc<CellMetrics>,
}

impl WritePause {
    /// How long writes have been held so far.
    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for WritePause {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        self.metrics
            .leader_transfer_write_pause_seconds
            .observe(held.as_secs_f64());
        tracing::debug!(?held, "writes resumed");
    }
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn start(
        raft: Raft,
        metrics: Arc<CellMetrics>,
        flush: Arc<FlushGate>,
        writes: Arc<WriteGate>,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(raft, metrics, flush, writes, rx));
        Proposer { tx }
    }

    /// Proposes `op` and waits until it is committed and applied; returns its
    /// result and the log index of its entry. Dropping the future abandons the
    /// reply, not the write (it may still be applied).
    pub async fn propose(&self, op: WriteOp) -> Result<(OpResult, u64), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { op, reply })
            .await
            .map_err(|_| ProposeError::Stopped("proposer stopped".into()))?;
        rx.await
            .map_err(|_| ProposeError::Stopped("proposal dropped".into()))?
    }
}

async fn run(
    raft: Raft,
    metrics: Arc<CellMetrics>,
    gate: Arc<FlushGate>,
    writes: Arc<WriteGate>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    // Fsyncs completed when the last entry was sent.
    let mut sent_at: Option<u64> = None;
    loop {
        // Wait for a slot first: while both are taken, writes accumulate in the queue.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // While our previous entry may still be waiting for the log's fsync,
        // wait for that fsync: everything arriving meanwhile joins this batch.
        // (We hold one permit: any fewer free means another entry is in flight.)
        if let Some(seen) = sent_at {
            let others_in_flight = slots.available_permits() < MAX_IN_FLIGHT - 1;
            if others_in_flight && gate.flushed() <= seen {
                gate.wait_past(seen, MAX_GATE_WAIT).await;
            }
        }
        // Waits here while a leadership transfer holds writes; the batch is
        // taken afterwards, so it carries everything queued meanwhile.
        let submitting = writes.enter().await;
        let mut bytes = first.op.size_hint();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.op.size_hint();
                    if bytes > MAX_BATCH_BYTES {
                        carry = Some(p);
                        break;
                    }
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        metrics.proposal_batch_ops.observe(batch.len() as f64);
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        sent_at = Some(gate.flushed());
        let sent = raft.client_write_ff(Request::Ops(ops)).await;
        drop(submitting);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome = match sent {
                Err(fatal) => Err(ProposeError::Stopped(fatal.to_string())),
                Ok(rx) => match rx.await {
                    Err(_) => Err(ProposeError::Stopped("Raft dropped the proposal".into())),
                    Ok(Ok(resp)) => Ok((resp.data, resp.log_id.index)),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                        leader: f.leader_id.zip(f.leader_node),
                    }),
                    Ok(Err(e)) => Err(ProposeError::Rejected(e.to_string())),
                },
            };
            drop(permit);
            let label = match &outcome {
                Ok(_) => "committed",
                Err(ProposeError::NotLeader { .. }) => "not_leader",
                Err(ProposeError::Rejected(_)) => "rejected",
                Err(ProposeError::Stopped(_)) => "stopped",
            };
            metrics
                .raft_proposals_total
                .with_label_values(&[label])
                .inc_by(replies.len() as u64);
            match outcome {
                Ok((Response::Ops(results), index)) if results.len() == replies.len() => {
                    for (reply, res) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok((res, index)));
                    }
                }
                Ok((other, _)) => {
                    tracing::error!("failed to match a batch's results to its ops: {other:?}");
                    for reply in replies {
                        let _ = reply.send(Err(ProposeError::Stopped("result mismatch".into())));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn gate() -> Arc<WriteGate> {
        let metrics = CellMetrics::new(prometheus::Registry::new()).expect("metrics");
        Arc::new(WriteGate::new(Arc::new(metrics)))
    }

    /// Long enough for a ready task to run on the test runtime; used only to
    /// show that something did *not* happen.
    const SETTLE: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_pause_holds_submissions_until_dropped_and_loses_none() {
        let g = gate();
        let pause = g.pause().await;
        assert!(g.is_paused());
        let through = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let (g, through) = (g.clone(), through.clone());
            waiting.push(tokio::spawn(async move {
                let _s = g.enter().await;
                through.fetch_add(1, Ordering::SeqCst);
            }));
        }
        tokio::time::sleep(SETTLE).await;
        assert_eq!(
            through.load(Ordering::SeqCst),
            0,
            "a submission passed a pause"
        );
        drop(pause);
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("submissions resume when the pause ends")
                .unwrap();
        }
        assert_eq!(through.load(Ordering::SeqCst), 10);
        assert!(!g.is_paused());
    }

    #[tokio::test]
    async fn a_pause_waits_for_the_submission_inside_and_goes_before_later_ones() {
        let g = gate();
        let inside = g.enter().await;
        let g2 = g.clone();
        let pausing = tokio::spawn(async move { g2.pause().await });
        tokio::time::sleep(SETTLE).await;
        assert!(
            !pausing.is_finished(),
            "paused while a submission was inside"
        );
        // A submission arriving after the pause asked queues behind it.
        let g3 = g.clone();
        let later = tokio::spawn(async move {
            let _s = g3.enter().await;
        });
        tokio::time::sleep(SETTLE).await;
        assert!(
            !later.is_finished(),
            "a later submission overtook the pause"
        );
        drop(inside);
        let pause = tokio::time::timeout(Duration::from_secs(5), pausing)
            .await
            .expect("the pause starts once the submission inside left")
            .unwrap();
        tokio::time::sleep(SETTLE).await;
        assert!(!later.is_finished(), "a submission passed a pause");
        drop(pause);
        tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("resumed")
            .unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_pause_resumes_writes_and_is_recorded() {
        let g = gate();
        let g2 = g.clone();
        // A transfer whose request is dropped mid-way (client gone, timeout).
        let transfer = tokio::spawn(async move {
            let _pause = g2.pause().await;
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(SETTLE).await;
        assert!(g.is_paused());
        transfer.abort();
        let _ = transfer.await;
        let _entered = tokio::time::timeout(Duration::from_secs(5), g.enter())
            .await
            .expect("writes resume when the pausing task is dropped");
        let h = &g.metrics.leader_transfer_write_pause_seconds;
        assert_eq!(h.get_sample_count(), 1);
        assert!(h.get_sample_sum() >= SETTLE.as_secs_f64() * 0.9);
    }
}
