//! Leadership transfer, the leader's side (ADR 0009), and the target's
//! `POST /raft/elect`. openraft 0.9 has no transfer API; the leader builds
//! one from its write gate, its replication metrics and the target's
//! `trigger().elect()`. Routes and error mapping live in `admin.rs` and
//! `raft_rpc.rs`.
//!
//! ```text
//!  leader L (POST /admin/transfer-leader {to: T})          target T
//!  wait until L has led for a lease (it refuses votes before)
//!  close the write gate ── new batches queue; nothing is dropped
//!  barrier: every entry submitted before is in L's log
//!  wait until matched(T) = L's last log index
//!  POST /raft/elect {from: L, term} ─────────────────────▶ trigger().elect()
//!                      ◀── vote(term+1, T's last log id = L's)
//!  grants (lease over, log not longer), steps down
//!                      ◀── AppendEntries from the new leader T
//!  sees leader T: open the gate ── queued writes get 421 not_leader → T
//! ```
//!
//! In a 3-voter cell T wins with its own vote and L's; the third replica
//! refuses (its lease from L's heartbeats is fresh), which is not needed.

use std::time::Duration;

use openraft::error::Fatal;
use openraft::{RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::replica::Replica;
use crate::types::{Raft, ReplicaNode};

/// Longest time a transfer holds new writes. Past it the transfer resumes
/// writes and gives up (unless an election it started is already under way).
/// Held writes wait, so the cap must stay well below their request timeout:
/// it is also never more than half of `request_timeout` ([`pause_cap`]).
pub const MAX_WRITE_PAUSE: Duration = Duration::from_secs(2);
/// Whole transfer (lease wait included), by default and at most.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Waited past the end of the leader's lease before asking for the election.
/// The lease and the wait are measured on one clock (this process), so this
/// only absorbs timer granularity.
const LEASE_MARGIN: Duration = Duration::from_millis(10);
/// Most election requests in one transfer. A request is repeated only while
/// this replica still leads in its term (the target never started, or its
/// vote request was refused), once per `elect_round`.
const MAX_ELECT_ATTEMPTS: u32 = 5;
/// Shortest wait for leadership to move after an election request: a vote
/// and an AppendEntries round trip, each with an fsync, on a busy host.
const MIN_ELECT_ROUND: Duration = Duration::from_millis(100);

type Metrics = RaftMetrics<u64, ReplicaNode>;

/// Why a transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Ask the leader (if known) instead.
    #[error("this replica is not the leader")]
    NotLeader { leader: Option<(u64, ReplicaNode)> },
    /// The target cannot lead: this replica itself, or not a member.
    #[error("{0}")]
    BadTarget(String),
    #[error("node {0} is a learner, not a voter; make it a voter with /admin/voters first")]
    NotVoter(u64),
    #[error("another leadership transfer is running on this replica; retry when it is done")]
    Busy,
    /// The time budget or the write-pause cap ran out; the message says where things stand.
    #[error("{0}")]
    Timeout(String),
    #[error("Raft stopped: {0}")]
    Stopped(String),
}

impl From<Fatal<u64>> for TransferError {
    fn from(e: Fatal<u64>) -> TransferError {
        TransferError::Stopped(e.to_string())
    }
}

/// The answer of a transfer that moved leadership to its target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReply {
    pub leader: u64,
    pub term: u64,
    /// Election requests sent to the target.
    pub attempts: u32,
    /// How long new writes were held on the old leader.
    pub write_pause_ms: u64,
}

/// `POST /raft/elect` body: the leader of `term` asks the receiver to start
/// an election now. Wire bincode, like openraft's RPCs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionRequest {
    pub from: u64,
    pub term: u64,
}

/// `POST /raft/elect` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionReply {
    /// Whether the receiver started an election.
    pub started: bool,
    /// The receiver's term and leader as it answered.
    pub term: u64,
    pub leader: Option<u64>,
}

/// Where leadership stands, as the leader that started a transfer in `term` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Still the leader of `term`.
    Leading,
    /// Stepped down; no new leader known yet (this replica's vote is not committed).
    Electing,
    /// A leader is known for a later term (this replica, if it was re-elected).
    Settled { leader: u64, term: u64 },
}

fn progress(m: &Metrics, me: u64, term: u64) -> Progress {
    match m.current_leader {
        Some(leader) if leader != me || m.current_term != term => Progress::Settled {
            leader,
            term: m.current_term,
        },
        Some(_) if m.state == ServerState::Leader => Progress::Leading,
        _ => Progress::Electing,
    }
}

/// Whether `to` has acknowledged every entry in this leader's log: then its
/// vote request carries a last log id as high as the leader's, which the
/// leader grants once its lease is over.
fn caught_up(m: &Metrics, to: u64) -> bool {
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&to))
        .map(|l| l.as_ref().map(|l| l.index));
    matches!(matched, Some(idx) if idx >= m.last_log_index)
}

/// Validates a transfer to `to` on a replica whose metrics are `m`; returns the target's node.
fn check_target(m: &Metrics, me: u64, to: u64) -> Result<ReplicaNode, TransferError> {
    let membership = m.membership_config.membership();
    if m.state != ServerState::Leader {
        let leader = m
            .current_leader
            .filter(|l| *l != me)
            .and_then(|l| membership.get_node(&l).map(|n| (l, n.clone())));
        return Err(TransferError::NotLeader { leader });
    }
    if to == me {
        return Err(TransferError::BadTarget(format!(
            "node {me} already leads the cell; name another voter"
        )));
    }
    let Some(node) = membership.get_node(&to) else {
        let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
        return Err(TransferError::BadTarget(format!(
            "node {to} is not a member of this cell (members: {members:?})"
        )));
    };
    if !membership.voter_ids().any(|v| v == to) {
        return Err(TransferError::NotVoter(to));
    }
    Ok(node.clone())
}

/// The write-pause cap of a replica whose writes time out after `request_timeout`.
pub fn pause_cap(request_timeout: Duration) -> Duration {
    MAX_WRITE_PAUSE.min(request_timeout / 2)
}

/// How much of a lease that started at `since` is left at `now`.
fn lease_left(since: Instant, lease: Duration, now: Instant) -> Duration {
    (since + lease).saturating_duration_since(now)
}

/// A metrics receiver whose next change is a report made after the Raft
/// core handled every message sent to it before this call (client writes
/// included). The core reports metrics at the top of each turn of its loop;
/// the closure runs inside a turn, after the earlier messages, so marking
/// the receiver seen there makes `changed()` wait for a later report.
async fn fresh_metrics(raft: &Raft) -> Result<watch::Receiver<Metrics>, Fatal<u64>> {
    let mut rx = raft.metrics();
    raft.with_raft_state(move |_| {
        rx.borrow_and_update();
        rx
    })
    .await
}

/// Moves leadership from this replica (the leader) to voter `to` within
/// `budget`, holding new writes for at most [`pause_cap`].
pub async fn transfer(
    rep: &Replica,
    to: u64,
    budget: Duration,
) -> Result<TransferReply, TransferError> {
    let deadline = Instant::now() + budget;
    let me = rep.cfg.node_id.0;
    let m = rep.raft.metrics().borrow().clone();
    let node = check_target(&m, me, to)?;
    let _only = rep.transfer.try_lock().map_err(|_| TransferError::Busy)?;
    tracing::info!(to, term = m.current_term, "transferring leadership");
    let res = run(rep, me, to, &node, m.current_term, deadline).await;
    let outcome = match &res {
        Ok(r) => {
            tracing::info!(
                to,
                term = r.term,
                attempts = r.attempts,
                write_pause_ms = r.write_pause_ms,
                "transferred leadership"
            );
            "moved"
        }
        Err(e @ TransferError::Timeout(_)) => {
            tracing::warn!(to, "leadership transfer failed: {e}");
            "timeout"
        }
        Err(e) => {
            tracing::warn!(to, "leadership transfer failed: {e}");
            "failed"
        }
    };
    rep.metrics
        .leader_transfers_total
        .with_label_values(&[outcome])
        .inc();
    res
}

async fn run(
    rep: &Replica,
    me: u64,
    to: u64,
    node: &ReplicaNode,
    term: u64,
    deadline: Instant,
) -> Result<TransferReply, TransferError> {
    let timeout = |msg: String| TransferError::Timeout(msg);
    // 1. A leader refuses every vote while its lease (election_timeout_max
    //    from its election) runs: wait it out, writes flowing meanwhile.
    let lease = rep.cfg.raft.election_timeout_max;
    let since = rep
        .raft
        .with_raft_state(|st| st.vote_last_modified())
        .await?;
    if let Some(since) = since {
        let left = lease_left(since, lease, Instant::now());
        if !left.is_zero() {
            let until = Instant::now() + left + LEASE_MARGIN;
            if until > deadline {
                return Err(timeout(format!(
                    "this replica became leader less than {lease:?} ago and refuses votes for another {left:?}, past the transfer's time budget"
                )));
            }
            tokio::time::sleep_until(until).await;
        }
    }

    // 2. Hold new writes. Dropping `pause` resumes them, on every path.
    let pause = tokio::time::timeout_at(deadline, rep.writes.pause())
        .await
        .map_err(|_| timeout("could not pause writes within the time budget".into()))?;
    let paused_at = Instant::now();
    let cap = pause_cap(rep.cfg.request_timeout);
    let pause_until = (paused_at + cap).min(deadline);
    let mut pause = Some(pause);
    let mut resumed_at = None;
    let mut rx = fresh_metrics(&rep.raft).await?;

    // 3. Wait until the target holds the whole log, ask it to start an
    //    election, repeat while this replica still leads its term; then wait
    //    until a new leader is known.
    let round = (rep.cfg.raft.heartbeat_interval * 4).max(MIN_ELECT_ROUND);
    let mut attempts = 0u32;
    let mut next_request = paused_at;
    let mut last_refusal = String::from("no answer yet");
    let settled = loop {
        let now = Instant::now();
        let wake = if pause.is_none() {
            deadline
        } else if attempts > 0 && attempts < MAX_ELECT_ATTEMPTS && next_request > now {
            next_request.min(pause_until)
        } else {
            pause_until
        };
        // Woken by a metrics report (the first one is fresh, see above) or a timer.
        if let Ok(Err(_)) = tokio::time::timeout_at(wake, rx.changed()).await {
            return Err(TransferError::Stopped("Raft stopped".into()));
        }
        let now = Instant::now();
        let m = rx.borrow_and_update().clone();
        match progress(&m, me, term) {
            Progress::Settled { leader, term } => break (leader, term),
            Progress::Electing if now >= deadline => {
                return Err(timeout(format!(
                    "node {to} was asked to lead ({attempts} requests), but no leader was known within the time budget; check /health"
                )));
            }
            Progress::Electing => {}
            Progress::Leading if pause.is_none() || now >= pause_until => {
                let why = if caught_up(&m, to) {
                    format!("node {to} was asked {attempts} times to start an election but did not win (last: {last_refusal})")
                } else {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&to))
                        .copied()
                        .flatten();
                    format!(
                        "node {to} did not catch up with the log (last index {:?}, matched {:?})",
                        m.last_log_index,
                        matched.map(|l| l.index)
                    )
                };
                return Err(timeout(format!(
                    "{why} within the {cap:?} write-pause cap; writes resumed and node {me} still leads"
                )));
            }
            Progress::Leading => {
                if attempts < MAX_ELECT_ATTEMPTS && now >= next_request && caught_up(&m, to) {
                    attempts += 1;
                    let req = ElectionRequest { from: me, term };
                    let left = pause_until.saturating_duration_since(now);
                    match rep
                        .peers
                        .request_election(to, &node.raft_addr, &req, left)
                        .await
                    {
                        Ok(r) if r.started => {
                            tracing::info!(
                                to,
                                attempt = attempts,
                                "the target started an election"
                            );
                        }
                        Ok(r) => {
                            last_refusal = format!(
                                "it declined: its term is {} and its leader {:?}",
                                r.term, r.leader
                            );
                            tracing::info!(to, attempt = attempts, "{last_refusal}");
                        }
                        Err(e) => {
                            tracing::warn!(
                                to,
                                attempt = attempts,
                                "failed to ask for an election: {e}"
                            );
                            last_refusal = e;
                        }
                    }
                    next_request = Instant::now() + round;
                }
            }
        }
        // Past the cap: resume writes, but keep waiting for an election
        // already under way (the arms above end the loop if this replica still leads).
        if pause.is_some() && now >= pause_until {
            pause = None;
            resumed_at = Some(now);
            tracing::warn!(to, "leadership transfer: writes resumed at the {cap:?} cap while an election is under way");
        }
    };
    drop(pause);
    let write_pause = resumed_at.unwrap_or_else(Instant::now) - paused_at;
    let (leader, term) = settled;
    if leader != to {
        return Err(timeout(format!(
            "leadership moved to node {leader} (term {term}), not to node {to}"
        )));
    }
    Ok(TransferReply {
        leader,
        term,
        attempts,
        write_pause_ms: write_pause.as_millis() as u64,
    })
}

/// The target's side of `POST /raft/elect`: starts an election if this
/// replica follows `req.from` in `req.term`. A late or repeated request (a
/// later term, another leader) is declined, so it cannot depose a newer leader.
pub async fn on_election_request(
    rep: &Replica,
    req: &ElectionRequest,
) -> Result<ElectionReply, Fatal<u64>> {
    let m = rep.raft.metrics().borrow().clone();
    let follows = m.state == ServerState::Follower
        && m.current_term == req.term
        && m.current_leader == Some(req.from);
    if follows {
        tracing::info!(
            leader = req.from,
            term = req.term,
            "starting an election at the leader's request"
        );
        rep.raft.trigger().elect().await?;
    } else {
        tracing::info!(from = req.from, term = req.term, my_term = m.current_term, leader = ?m.current_leader, state = ?m.state, "declined an election request");
    }
    Ok(ElectionReply {
        started: follows,
        term: m.current_term,
        leader: m.current_leader,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

    use super::*;

    fn node(i: u64) -> ReplicaNode {
        ReplicaNode {
            api_addr: format!("127.0.0.1:{}", 7000 + i),
            raft_addr: format!("127.0.0.1:{}", 7100 + i),
        }
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    /// Metrics of node `me` in a cell with voters 1..=3 and learner 4.
    fn metrics(me: u64, state: ServerState, leader: Option<u64>, term: u64) -> Metrics {
        let voters = BTreeSet::from([1, 2, 3]);
        let nodes: BTreeMap<u64, ReplicaNode> = (1..=4).map(|i| (i, node(i))).collect();
        let membership = Membership::new(vec![voters], nodes);
        let mut m = Metrics::new_initial(me);
        m.state = state;
        m.current_leader = leader;
        m.current_term = term;
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(1, 1)), membership));
        m
    }

    #[test]
    fn targets_are_checked() {
        let leader = metrics(1, ServerState::Leader, Some(1), 3);
        assert_eq!(check_target(&leader, 1, 2).unwrap(), node(2));
        assert!(matches!(
            check_target(&leader, 1, 1),
            Err(TransferError::BadTarget(m)) if m.contains("already leads")
        ));
        assert!(matches!(
            check_target(&leader, 1, 9),
            Err(TransferError::BadTarget(m)) if m.contains("not a member")
        ));
        assert!(matches!(
            check_target(&leader, 1, 4),
            Err(TransferError::NotVoter(4))
        ));
        let follower = metrics(2, ServerState::Follower, Some(1), 3);
        match check_target(&follower, 2, 3) {
            Err(TransferError::NotLeader { leader }) => assert_eq!(leader, Some((1, node(1)))),
            other => panic!("{other:?}"),
        }
        let candidate = metrics(2, ServerState::Candidate, None, 4);
        assert!(matches!(
            check_target(&candidate, 2, 3),
            Err(TransferError::NotLeader { leader: None })
        ));
    }

    #[test]
    fn caught_up_means_the_target_matched_the_last_index() {
        let mut m = metrics(1, ServerState::Leader, Some(1), 3);
        m.last_log_index = Some(10);
        assert!(!caught_up(&m, 2), "no replication metrics yet");
        m.replication = Some(BTreeMap::from([
            (1, Some(log_id(3, 10))),
            (2, Some(log_id(3, 9))),
            (3, None),
        ]));
        assert!(!caught_up(&m, 2));
        assert!(!caught_up(&m, 3));
        assert!(!caught_up(&m, 4), "not replicated to at all");
        m.replication
            .as_mut()
            .unwrap()
            .insert(2, Some(log_id(3, 10)));
        assert!(caught_up(&m, 2));
    }

    #[test]
    fn progress_follows_the_old_leaders_view() {
        let leading = metrics(1, ServerState::Leader, Some(1), 3);
        assert_eq!(progress(&leading, 1, 3), Progress::Leading);
        // Granted the target's vote: a follower of term 4 without a known leader.
        let electing = metrics(1, ServerState::Follower, None, 4);
        assert_eq!(progress(&electing, 1, 3), Progress::Electing);
        // The target's first AppendEntries committed the vote.
        let moved = metrics(1, ServerState::Follower, Some(2), 4);
        assert_eq!(
            progress(&moved, 1, 3),
            Progress::Settled { leader: 2, term: 4 }
        );
        // Re-elected in a later term: settled on this replica, not on the target.
        let again = metrics(1, ServerState::Leader, Some(1), 5);
        assert_eq!(
            progress(&again, 1, 3),
            Progress::Settled { leader: 1, term: 5 }
        );
    }

    #[test]
    fn the_pause_cap_stays_below_the_write_timeout() {
        assert_eq!(pause_cap(Duration::from_secs(5)), MAX_WRITE_PAUSE);
        assert_eq!(
            pause_cap(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn the_lease_runs_from_the_last_vote_change() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(500);
        assert_eq!(lease_left(t0, lease, t0), lease);
        assert_eq!(
            lease_left(t0, lease, t0 + Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        assert_eq!(lease_left(t0, lease, t0 + lease), Duration::ZERO);
        assert_eq!(lease_left(t0, lease, t0 + lease * 3), Duration::ZERO);
    }
}
