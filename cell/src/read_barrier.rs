//! Linearizable reads, batched: every read waiting when a round starts shares
//! one ReadIndex round (`Raft::ensure_linearizable`: confirm leadership with a
//! quorum, then wait until the state machine has applied the read index).
//! Under load one heartbeat round serves many reads instead of one each.

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::types::{Raft, ReplicaNode};

/// Reads waiting for a round. Bounded: a full queue makes readers wait (back-pressure).
const READ_QUEUE_CAPACITY: usize = 8192;

#[derive(Clone, Debug)]
pub enum ReadError {
    /// Not the leader; read from this one (if known).
    NotLeader {
        leader: Option<(u64, ReplicaNode)>,
    },
    /// Leadership could not be confirmed by a quorum.
    NoQuorum(String),
    ShuttingDown,
}

type Waiter = oneshot::Sender<Result<(), ReadError>>;

#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<Waiter>,
}

impl ReadBarrier {
    pub fn start(raft: Raft) -> ReadBarrier {
        let (tx, mut rx) = mpsc::channel::<Waiter>(READ_QUEUE_CAPACITY);
        tokio::spawn(async move {
            // Ends when every ReadBarrier clone is dropped.
            while let Some(first) = rx.recv().await {
                let mut waiting = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiting.push(w);
                }
                let res = match raft.ensure_linearizable().await {
                    Ok(_) => Ok(()),
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        Err(ReadError::NotLeader {
                            leader: f.leader_id.zip(f.leader_node),
                        })
                    }
                    Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                        Err(ReadError::NoQuorum(e.to_string()))
                    }
                    Err(RaftError::Fatal(_)) => Err(ReadError::ShuttingDown),
                };
                for w in waiting {
                    let _ = w.send(res.clone());
                }
            }
        });
        ReadBarrier { tx }
    }

    /// Returns once a read started now would observe every write acknowledged before it.
    /// Cancellation-safe: dropping the future only drops this reader's place.
    pub async fn wait(&self) -> Result<(), ReadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| ReadError::ShuttingDown)?;
        rx.await.map_err(|_| ReadError::ShuttingDown)?
    }
}
