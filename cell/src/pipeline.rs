//! Pipelined replication under openraft 0.9's one-RPC-at-a-time stream.
//!
//! openraft 0.9 keeps one AppendEntries in flight per follower, and sends an
//! entry only after the leader's own fsync of it. Under load each entry waits
//! for the RPC ahead of it (ADR 0013). This module sends ahead: a per-follower
//! task (`run`) watches the leader's log (`LogStore::watch_appended`) and, the
//! moment entries of the leader's own term are written, sends them in
//! *speculative* AppendEntries that continue the chain of what the follower
//! was last sent, up to `depth` in flight. When openraft then asks for the same
//! range, `Chain::on_request` answers from the speculative RPC's result
//! instead of sending it again. Raft's safety does not depend on when a leader
//! sends an entry of its own log, only on what it counts: openraft still
//! counts a follower as having an entry only after that follower answered,
//! after its fsync, an RPC that carried it. A speculative RPC that fails,
//! conflicts (it overtook its predecessor on the wire) or no longer matches
//! what openraft asks for is dropped, and openraft's request goes out as usual.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::Vote;
use tokio::sync::{oneshot, watch, Notify};

use crate::log_store::{LogStore, MAX_APPEND_BYTES};
use crate::types::{LogId, TypeConfig};

/// Answered RPCs sent ahead that openraft has not asked about yet, per unit
/// of depth, before sending ahead pauses (openraft is behind, e.g. stalled
/// on its own fsync).
const UNCLAIMED_PER_DEPTH: usize = 4;

/// What a speculative RPC came back with: the follower's answer, or why none came.
pub type SpecResult = Result<AppendEntriesResponse<u64>, String>;

/// A speculative AppendEntries in flight: entries `(prev, last]`.
struct Spec {
    prev: LogId,
    last: LogId,
    rx: oneshot::Receiver<SpecResult>,
}

/// What `Chain::on_request` decided about a request openraft wants sent.
pub enum Decision {
    /// The follower already acknowledged it: answer at once.
    Answer(AppendEntriesResponse<u64>),
    /// A speculative RPC with the same `prev` is in flight: wait for it.
    Await {
        epoch: u64,
        last: LogId,
        rx: oneshot::Receiver<SpecResult>,
    },
    /// Nothing covers it: send it (the chain continues after it).
    Send,
}

/// Per-follower replication state shared by openraft's calls and the sender task.
pub struct Chain {
    /// The leader session (openraft creates one client per session; checked anyway).
    vote: Option<Vote<u64>>,
    /// Freshest `leader_commit` openraft asked to send.
    commit: Option<LogId>,
    /// Deadline openraft gives one AppendEntries.
    ttl: Duration,
    /// Last entry the follower was sent, in order; `None`: not anchored, send nothing ahead.
    tail: Option<LogId>,
    inflight: VecDeque<Spec>,
    /// Highest entry the follower acknowledged (durable, matching) in this session.
    acked: Option<LogId>,
    /// Bumped whenever the chain is abandoned, so late results of old RPCs are ignored.
    epoch: u64,
    depth: usize,
}

/// What the sender task sends next: entries after `prev` in `epoch`.
pub struct NextSpec {
    pub epoch: u64,
    pub vote: Vote<u64>,
    pub prev: LogId,
    pub commit: Option<LogId>,
    pub ttl: Duration,
}

impl Chain {
    pub fn new(depth: usize) -> Chain {
        Chain {
            vote: None,
            commit: None,
            ttl: Duration::from_millis(50),
            tail: None,
            inflight: VecDeque::new(),
            acked: None,
            epoch: 0,
            depth,
        }
    }

    /// Drops every speculative RPC and stops sending ahead until the next anchor.
    fn abandon(&mut self) {
        self.inflight.clear();
        self.tail = None;
        self.epoch += 1;
    }

    /// openraft wants `(prev, last]` sent (non-empty) with `vote`.
    pub fn on_request(
        &mut self,
        vote: &Vote<u64>,
        prev: Option<LogId>,
        last: LogId,
        commit: Option<LogId>,
        ttl: Duration,
    ) -> Decision {
        if self.vote.as_ref() != Some(vote) {
            self.abandon();
            self.acked = None;
            self.commit = None;
            self.vote = Some(*vote);
        }
        self.commit = self.commit.max(commit);
        self.ttl = ttl;
        let Some(prev) = prev else {
            self.abandon();
            return Decision::Send;
        };
        // Entries of one leader's log in one session: an index names one entry.
        if let Some(acked) = self.acked {
            if prev.index < acked.index {
                return Decision::Answer(covered(last, acked));
            }
        }
        while self
            .inflight
            .front()
            .is_some_and(|s| s.last.index <= prev.index)
        {
            self.inflight.pop_front();
        }
        match self.inflight.front() {
            Some(s) if s.prev == prev => {
                let s = self.inflight.pop_front().expect("front exists");
                Decision::Await {
                    epoch: self.epoch,
                    last: s.last,
                    rx: s.rx,
                }
            }
            _ => {
                self.abandon();
                Decision::Send
            }
        }
    }

    /// A speculative RPC openraft waited for came back `ok` (a `Success`) or not.
    pub fn on_spec_result(&mut self, epoch: u64, last: LogId, ok: bool) {
        if epoch != self.epoch {
            return;
        }
        if ok {
            self.acked = self.acked.max(Some(last));
        } else {
            self.abandon();
        }
    }

    /// openraft's own request for entries up to `last` is about to go out:
    /// send ahead after it from now on.
    pub fn anchor(&mut self, last: LogId) {
        self.abandon();
        self.tail = Some(last);
    }

    /// openraft's own request for entries up to `last` came back `ok` or not.
    pub fn on_sent_result(&mut self, last: LogId, ok: bool) {
        if ok {
            self.acked = self.acked.max(Some(last));
        } else {
            self.abandon();
        }
    }

    /// Whether another RPC may go ahead: fewer than `depth` unanswered ones
    /// (`on_wire`), and a bounded number of answered ones openraft has not
    /// asked about yet.
    fn has_room(&self, on_wire: usize) -> bool {
        on_wire < self.depth && self.inflight.len() < UNCLAIMED_PER_DEPTH * self.depth
    }

    /// What to send ahead next, if the window has room and the chain is anchored.
    pub fn next(&self, on_wire: usize) -> Option<NextSpec> {
        if !self.has_room(on_wire) {
            return None;
        }
        Some(NextSpec {
            epoch: self.epoch,
            vote: self.vote?,
            prev: self.tail?,
            commit: self.commit,
            ttl: self.ttl,
        })
    }

    /// Records a speculative RPC about to go out; false if the chain moved meanwhile.
    pub fn push(
        &mut self,
        epoch: u64,
        prev: LogId,
        last: LogId,
        rx: oneshot::Receiver<SpecResult>,
        on_wire: usize,
    ) -> bool {
        if epoch != self.epoch || self.tail != Some(prev) || !self.has_room(on_wire) {
            return false;
        }
        self.inflight.push_back(Spec { prev, last, rx });
        self.tail = Some(last);
        true
    }
}

/// The answer to a request for entries up to `last` when the follower has
/// acknowledged up to `upto` (which is at or past the request's `prev`).
fn covered(last: LogId, upto: LogId) -> AppendEntriesResponse<u64> {
    if last.index <= upto.index {
        AppendEntriesResponse::Success
    } else {
        AppendEntriesResponse::PartialSuccess(Some(upto))
    }
}

/// The answer to openraft's request for entries up to `last` from a
/// speculative RPC that succeeded for entries up to `spec_last` with the same `prev`.
pub fn answer_from_spec(last: LogId, spec_last: LogId) -> AppendEntriesResponse<u64> {
    covered(last, spec_last)
}

/// Shared between a `PeerClient` and its sender task.
pub struct Shared {
    pub chain: Mutex<Chain>,
    /// Woken when the chain is re-anchored or an RPC sent ahead is answered.
    pub wake: Notify,
    /// RPCs sent ahead and not answered yet (of any epoch: all load the follower).
    pub on_wire: AtomicUsize,
}

impl Shared {
    pub fn new(depth: usize) -> Shared {
        Shared {
            chain: Mutex::new(Chain::new(depth)),
            wake: Notify::new(),
            on_wire: AtomicUsize::new(0),
        }
    }
}

/// Sends one encoded AppendEntries to the follower, within `ttl`.
pub trait SendAppend: Send + Sync + 'static {
    fn send(
        &self,
        body: Vec<u8>,
        ttl: Duration,
    ) -> impl std::future::Future<Output = SpecResult> + Send;
}

/// The sender task of one follower: until `stop` fires (its `PeerClient` was
/// dropped), sends entries of the leader's term ahead as soon as they are written.
pub async fn run<S: SendAppend + Clone>(
    shared: Arc<Shared>,
    log: LogStore,
    mut appended: watch::Receiver<Option<LogId>>,
    sender: S,
    max_body: usize,
    mut stop: oneshot::Receiver<()>,
    on_sent: impl Fn() + Send + 'static,
) {
    loop {
        loop {
            let on_wire = shared.on_wire.load(Ordering::Acquire);
            let Some(next) = shared.chain.lock().expect("chain lock").next(on_wire) else {
                break;
            };
            let Some(written) = *appended.borrow_and_update() else {
                break;
            };
            // Only entries of this leader's own term: no other leader can have
            // written them, so the leader's log holds them unchanged.
            if !next.vote.is_committed()
                || written.leader_id != *next.vote.leader_id()
                || written.index <= next.prev.index
            {
                break;
            }
            let range = next.prev.index + 1..=written.index;
            let entries = match log.read_entries(range, Some(MAX_APPEND_BYTES)) {
                Ok(e) => e,
                Err(_) => break,
            };
            let contiguous = entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.log_id.index == next.prev.index + 1 + i as u64);
            let Some(last) = entries.last().map(|e| e.log_id) else {
                break;
            };
            if !contiguous || entries[0].log_id.leader_id != *next.vote.leader_id() {
                break;
            }
            let req = AppendEntriesRequest::<TypeConfig> {
                vote: next.vote,
                prev_log_id: Some(next.prev),
                leader_commit: next.commit,
                entries,
            };
            let body = match common::wire::encode(&req) {
                Ok(b) if b.len() <= max_body => b,
                _ => break,
            };
            let (tx, rx) = oneshot::channel();
            if !shared
                .chain
                .lock()
                .expect("chain lock")
                .push(next.epoch, next.prev, last, rx, on_wire)
            {
                continue;
            }
            on_sent();
            shared.on_wire.fetch_add(1, Ordering::AcqRel);
            let sender = sender.clone();
            let done = shared.clone();
            tokio::spawn(async move {
                let _ = tx.send(sender.send(body, next.ttl).await);
                done.on_wire.fetch_sub(1, Ordering::AcqRel);
                done.wake.notify_one();
            });
        }
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shared.wake.notified() => {}
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn vote(term: u64) -> Vote<u64> {
        Vote::new_committed(term, 1)
    }

    const TTL: Duration = Duration::from_millis(50);

    fn spec(chain: &mut Chain) -> (NextSpec, oneshot::Sender<SpecResult>, LogId) {
        let next = chain.next(0).expect("room to send ahead");
        let last = id(2, next.prev.index + 3);
        let (tx, rx) = oneshot::channel();
        assert!(chain.push(next.epoch, next.prev, last, rx, 0));
        (next, tx, last)
    }

    #[test]
    fn an_unanchored_chain_sends_nothing_ahead() {
        let mut c = Chain::new(2);
        assert!(c.next(0).is_none());
        // openraft's first request: nothing covers it, it anchors the chain.
        assert!(matches!(
            c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL),
            Decision::Send
        ));
        c.anchor(id(2, 8));
        let n = c.next(0).expect("anchored");
        assert_eq!(n.prev, id(2, 8));
        assert_eq!(n.vote, vote(2));
    }

    #[test]
    fn the_window_bounds_rpcs_in_flight() {
        let mut c = Chain::new(2);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        let (_, _t1, l1) = spec(&mut c);
        let (n2, _t2, _) = spec(&mut c);
        assert_eq!(n2.prev, l1, "the second continues the first");
        assert!(c.next(2).is_none(), "depth 2 on the wire");
        assert!(c.next(1).is_some(), "one answered: room for another");
        for _ in 2..UNCLAIMED_PER_DEPTH * 2 {
            let _ = spec(&mut c);
        }
        assert!(
            c.next(0).is_none(),
            "answered but unclaimed RPCs are bounded too"
        );
    }

    #[tokio::test]
    async fn a_request_matching_a_spec_waits_for_it_and_later_ones_are_answered_from_acks() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        c.on_sent_result(id(2, 8), true);
        let (_, tx, l1) = spec(&mut c); // (8, 11]
                                        // openraft asks for (8, 10]: the spec covers it.
        let Decision::Await { epoch, last, rx } =
            c.on_request(&vote(2), Some(id(2, 8)), id(2, 10), None, TTL)
        else {
            panic!("expected to wait for the spec");
        };
        assert_eq!(last, l1);
        tx.send(Ok(AppendEntriesResponse::Success)).unwrap();
        assert_eq!(rx.await.unwrap(), Ok(AppendEntriesResponse::Success));
        c.on_spec_result(epoch, last, true);
        assert_eq!(
            answer_from_spec(id(2, 10), last),
            AppendEntriesResponse::Success
        );
        // Next openraft asks for (10, 13]: acked up to 11, so a partial success at 11.
        match c.on_request(&vote(2), Some(id(2, 10)), id(2, 13), None, TTL) {
            Decision::Answer(r) => {
                assert_eq!(r, AppendEntriesResponse::PartialSuccess(Some(id(2, 11))))
            }
            _ => panic!("expected an answer from the acknowledged range"),
        }
    }

    #[test]
    fn a_longer_request_gets_a_partial_success_at_the_spec_end() {
        assert_eq!(
            answer_from_spec(id(2, 20), id(2, 11)),
            AppendEntriesResponse::PartialSuccess(Some(id(2, 11)))
        );
    }

    #[test]
    fn a_request_at_the_ack_boundary_is_not_answered_without_progress() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        c.on_sent_result(id(2, 8), true);
        // prev == acked: answering PartialSuccess(8) would make no progress.
        assert!(matches!(
            c.on_request(&vote(2), Some(id(2, 8)), id(2, 9), None, TTL),
            Decision::Send
        ));
    }

    #[test]
    fn a_failed_spec_or_an_unmatched_request_abandons_the_chain() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        let (n, _tx, l1) = spec(&mut c);
        c.on_spec_result(n.epoch, l1, false);
        assert!(c.next(0).is_none(), "not anchored after a failure");
        // Results of an abandoned epoch are ignored.
        c.anchor(id(2, 8));
        c.on_spec_result(n.epoch, id(2, 50), true);
        assert!(
            !matches!(
                c.on_request(&vote(2), Some(id(2, 9)), id(2, 12), None, TTL),
                Decision::Answer(_)
            ),
            "an ack from an old epoch must not answer anything"
        );
        // A request whose prev matches no spec goes out and re-anchors.
        c.anchor(id(2, 8));
        let _ = spec(&mut c);
        assert!(matches!(
            c.on_request(&vote(2), Some(id(2, 7)), id(2, 9), None, TTL),
            Decision::Send
        ));
        assert!(c.next(0).is_none());
    }

    #[test]
    fn a_new_vote_forgets_acknowledgements() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        c.on_sent_result(id(2, 8), true);
        assert!(matches!(
            c.on_request(&vote(3), Some(id(2, 6)), id(3, 9), None, TTL),
            Decision::Send
        ));
    }

    #[test]
    fn a_push_after_the_chain_moved_is_refused() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), None, TTL);
        c.anchor(id(2, 8));
        let n = c.next(0).unwrap();
        c.anchor(id(2, 9));
        let (_tx, rx) = oneshot::channel();
        assert!(!c.push(n.epoch, n.prev, id(2, 12), rx, 0));
    }

    #[test]
    fn commit_only_moves_forward() {
        let mut c = Chain::new(4);
        c.on_request(&vote(2), Some(id(1, 5)), id(2, 8), Some(id(2, 7)), TTL);
        c.anchor(id(2, 8));
        c.on_request(&vote(2), Some(id(2, 8)), id(2, 9), Some(id(2, 6)), TTL);
        c.anchor(id(2, 9));
        assert_eq!(c.next(0).unwrap().commit, Some(id(2, 7)));
    }
}
