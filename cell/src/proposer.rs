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

use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
/// Most bytes in one entry (values dominate); one large object still goes alone.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
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

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn start(raft: Raft, metrics: Arc<CellMetrics>, gate: Arc<FlushGate>) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(raft, metrics, gate, rx));
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
