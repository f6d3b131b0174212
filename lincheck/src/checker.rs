//! The search for one key: is there a total order of the key's operations
//! that respects real time (an operation that returned before another was
//! called comes first) and in which every answer is the register's? Wing &
//! Gong's backtracking search with Lowe's memoization, as Porcupine does it:
//!
//! ```text
//! entries: call/return events sorted by time (a call before a return at the same instant)
//! head ─▶ call a ─▶ call b ─▶ ret a ─▶ call c ─▶ ret b ─▶ ...
//!   at a call: the op's answer fits the state, and the point (linearized ∪ op,
//!              next state) is not already refuted ─▶ linearize it: lift its call
//!              and return out of the list, push (op, state), start at the head
//!   at a call that does not fit, or leads to a refuted point ─▶ next entry
//!   at a return: its op had to be linearized by now ─▶ backtrack: pop the last
//!              linearized op (its point is refuted), put its entries back, try
//!              the entry after its call
//!   list empty, or only pending returns left ─▶ linearizable
//!   backtrack with nothing to pop ─▶ not linearizable
//! ```
//!
//! What keeps it fast on real histories, none of which changes the answer:
//! - failed operations and pending reads are dropped (neither changed the
//!   state nor observed anything);
//! - written values no operation observes are one value ("unobserved"): the
//!   model cannot tell them apart, so the memo merges their points;
//! - equal operations (same input and answer; pending ones: same input) are
//!   linearized in time order (any order can be rearranged into that one),
//!   so n timed-out or unread writes cost n, not 2^n;
//! - a point that linearized more pending operations than a refuted one, and
//!   is otherwise the same, is refuted (pending operations may come last);
//! - a step that leaves a value some completed operation still needs (a read
//!   of it, an `IfMatch` on it that succeeded) while nothing can write it
//!   again is refused at once, not when that operation's return is reached.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::history::{state_text, Init, Nanos, Operation, Outcome, Precondition, ValueId};
use crate::model::{apply, map_input, map_output, Cond, In, Out};

/// How much search one check may spend.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Search steps (entries visited) per key, over all its initial states.
    pub max_steps: u64,
    /// No key's search goes on past this instant.
    pub deadline: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 1_000_000,
            deadline: None,
        }
    }
}

/// The register's state in an explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateView {
    Absent,
    Value(ValueId),
    /// A value no operation of the history read or named (a write nobody
    /// observed, or an unknown initial value).
    Unobserved,
}

impl std::fmt::Display for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateView::Absent => f.write_str("absent"),
            StateView::Value(v) => f.write_str(&state_text(Some(*v))),
            StateView::Unobserved => f.write_str("a value no operation observed"),
        }
    }
}

/// Why a key's history is not linearizable: the longest linearizable prefix
/// the search found and the operation that could not come next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The key's initial state assumed.
    pub init: StateView,
    /// Indexes (into the key's operations) of the longest linearizable
    /// prefix found, in its order.
    pub prefix: Vec<usize>,
    /// The operation that had to come next (it returned before any other
    /// order was possible) but whose answer does not fit.
    pub unplaced: usize,
    /// The state after the prefix.
    pub state: StateView,
    /// All of the above for a human, operations described in full.
    pub text: String,
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable(Explanation),
    /// The budget ran out before the search ended: no verdict.
    Unknown {
        reason: String,
    },
}

/// Operations of the prefix an explanation lists.
const EXPLAIN_PREFIX_OPS: usize = 6;
/// Concurrent operations an explanation lists.
const EXPLAIN_CONCURRENT_OPS: usize = 6;
/// Initial states tried when the initial state is unknown (absent, an
/// unobserved value, and up to this many values read or named but never
/// written: at most one can be the initial value).
const MAX_UNWRITTEN_CANDIDATES: usize = 4;
/// Equal ops called before an op among which it looks for one that must
/// come first (fewer constraints only make the search do more work).
const EQUAL_OPS_LOOKBACK: usize = 8;
/// Most memory (in 64-bit words, 256 MiB) one key's search may hold in
/// refuted points: each holds a bitset over the key's operations, so a long
/// hot key that backtracks a lot would otherwise take gigabytes.
const MAX_MEMO_WORDS: usize = 32 << 20;
/// How often (in steps) the search looks at the clock.
const DEADLINE_EVERY: u64 = 4096;

/// Checks the operations of one key (their `key` fields are not looked at).
pub fn check_key<K>(ops: &[Operation<K>], init: Init, budget: &Budget) -> KeyVerdict {
    let prepared = Prepared::new(ops);
    let mut steps = 0u64;
    let mut best: Option<(Explanation, usize)> = None;
    let mut cut_short: Option<String> = None;
    for candidate in prepared.initial_states(ops, init) {
        match prepared.search(candidate, budget, &mut steps) {
            Search::Linearizable => return KeyVerdict::Linearizable,
            Search::Stuck(s) => {
                if best.as_ref().is_none_or(|(_, d)| s.prefix.len() > *d) {
                    let depth = s.prefix.len();
                    best = Some((prepared.explain(ops, candidate, &s), depth));
                }
            }
            Search::OutOfBudget(why) => cut_short = Some(why),
        }
    }
    match (cut_short, best) {
        (Some(reason), _) => KeyVerdict::Unknown { reason },
        (None, Some((e, _))) => KeyVerdict::NotLinearizable(e),
        (None, None) => KeyVerdict::Unknown {
            reason: "no initial state to try".to_owned(),
        },
    }
}

/// A value index: the observed values are `0..hidden`, `hidden` stands for
/// every unobserved one.
type Val = u32;
type State = Option<Val>;
/// What makes two ops interchangeable: input and answer (`None`: pending).
type EqualOps = (In<Val>, Option<Out<Val>>);

/// One operation, ready for the search.
struct Op {
    /// Index in the caller's slice.
    orig: usize,
    input: In<Val>,
    /// `None`: pending (unknown), fits any answer.
    output: Option<Out<Val>>,
    /// An equal op (same input and answer) that can be linearized first
    /// without loss of generality, and must be.
    after: Option<usize>,
    /// Its bit in the completed or the pending set (by `output.is_none()`).
    slot: usize,
    /// The observed value it writes.
    writes: Option<Val>,
    /// The observed value its (completed) answer needs the key to hold.
    needs: Option<Val>,
}

/// Per observed value: completed ops not yet linearized that need the key
/// to hold it, and ops not yet linearized that write it. When the state
/// leaves a value that some op still needs and nothing can write again,
/// that op can never be placed: the branch is dead at once, not at the
/// op's return (which is where plain Wing & Gong would notice).
struct Pending {
    need: Vec<u32>,
    writers: Vec<u32>,
}

impl Pending {
    fn new(ops: &[Op], values: usize) -> Pending {
        let mut p = Pending {
            need: vec![0; values],
            writers: vec![0; values],
        };
        for op in ops {
            p.release(op);
        }
        p
    }

    /// `op` is linearized.
    fn take(&mut self, op: &Op) {
        if let Some(v) = op.needs {
            self.need[v as usize] -= 1;
        }
        if let Some(v) = op.writes {
            self.writers[v as usize] -= 1;
        }
    }

    /// `op` is not (or no longer) linearized.
    fn release(&mut self, op: &Op) {
        if let Some(v) = op.needs {
            self.need[v as usize] += 1;
        }
        if let Some(v) = op.writes {
            self.writers[v as usize] += 1;
        }
    }

    /// Whether going from `from` to `to` strands an op that needs `from`.
    fn strands(&self, from: State, to: State) -> bool {
        match from {
            Some(v) if to != from && (v as usize) < self.need.len() => {
                self.need[v as usize] > 0 && self.writers[v as usize] == 0
            }
            _ => false,
        }
    }
}

/// A set of op slots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }

    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(&of.0).all(|(a, b)| a & !b == 0)
    }
}

/// The linearized ops: completed ones and pending ones apart, because a
/// point that linearized fewer pending ops (same completed ops, same state)
/// can do all the other can: pending ops may always go last.
struct Linearized {
    done: Bits,
    pending: Bits,
}

impl Linearized {
    fn set(&mut self, op: &Op, on: bool) {
        match op.output {
            Some(_) => self.done.set(op.slot, on),
            None => self.pending.set(op.slot, on),
        }
    }

    fn has(&self, op: &Op) -> bool {
        match op.output {
            Some(_) => self.done.has(op.slot),
            None => self.pending.has(op.slot),
        }
    }
}

/// The points the search has finished exploring without success:
/// (completed ops, state) → the pending sets finished with them. A new point
/// needs no search if a finished one has the same completed ops and state
/// and a subset of its pending ops (Lowe's cache, plus that subsumption:
/// whatever the new point could still do, the finished one could have done
/// by leaving its extra pending ops out). Only finished points count; an
/// unfinished one is an ancestor of the current point, never equal to it.
#[derive(Default)]
struct Seen {
    points: HashMap<(Bits, State), Vec<Bits>>,
    /// 64-bit words held (an upper bound: dropped supersets are not taken off).
    words: usize,
}

impl Seen {
    fn subsumes(&self, l: &Linearized, state: State) -> bool {
        self.points
            .get(&(l.done.clone(), state))
            .is_some_and(|seen| seen.iter().any(|p| p.is_subset(&l.pending)))
    }

    fn finished(&mut self, l: &Linearized, state: State) {
        self.words += l.done.0.len() + l.pending.0.len() + 4;
        let seen = self.points.entry((l.done.clone(), state)).or_default();
        // Keep an antichain: a smaller pending set makes larger ones redundant.
        seen.retain(|p| !l.pending.is_subset(p));
        seen.push(l.pending.clone());
    }
}

struct Prepared {
    ops: Vec<Op>,
    /// Observed values, by index.
    values: Vec<ValueId>,
    index: HashMap<ValueId, Val>,
    /// Entries in time order: (op, is_call).
    entries: Vec<(usize, bool)>,
    /// (call, return) of each op; a pending op returns at `Nanos::MAX`.
    times: Vec<(Nanos, Nanos)>,
}

/// How one search ended.
enum Search {
    Linearizable,
    Stuck(Stuck),
    OutOfBudget(String),
}

/// The deepest point a failed search reached.
struct Stuck {
    prefix: Vec<usize>,
    unplaced: usize,
    state: State,
}

impl Prepared {
    fn new<K>(all: &[Operation<K>]) -> Prepared {
        let kept: Vec<usize> = (0..all.len())
            .filter(|&i| match all[i].outcome {
                Outcome::Failed => false,
                // A pending read changes nothing and observed nothing.
                Outcome::Unknown => all[i].input != crate::history::Input::Get,
                Outcome::Ok(_) => true,
            })
            .collect();
        // Values an operation can tell apart: read ones and named ones.
        let mut values = Vec::new();
        let mut index: HashMap<ValueId, Val> = HashMap::new();
        let mut observe = |v: ValueId| {
            index.entry(v).or_insert_with(|| {
                values.push(v);
                (values.len() - 1) as Val
            });
        };
        for &i in &kept {
            let op = &all[i];
            if let Outcome::Ok(crate::history::Output::Value(Some(v))) = op.outcome {
                observe(v);
            }
            match op.input {
                crate::history::Input::Put {
                    precondition: Precondition::IfMatch(v),
                    ..
                }
                | crate::history::Input::Delete {
                    precondition: Precondition::IfMatch(v),
                } => observe(v),
                _ => {}
            }
        }
        let hidden = values.len() as Val;
        let dense = |v: ValueId| index.get(&v).copied().unwrap_or(hidden);
        let mut ops: Vec<Op> = kept
            .iter()
            .map(|&i| {
                let o = &all[i];
                Op {
                    orig: i,
                    input: map_input(o.input, dense),
                    output: match o.outcome {
                        Outcome::Ok(out) => Some(map_output(out, dense)),
                        _ => None,
                    },
                    after: None,
                    slot: 0,
                    writes: None,
                    needs: None,
                }
            })
            .collect();
        let (mut done, mut pending) = (0, 0);
        for op in &mut ops {
            op.writes = match op.input {
                In::Put(v, _) if v != hidden => Some(v),
                _ => None,
            };
            op.needs = match (op.input, op.output) {
                (_, Some(Out::Value(Some(v)))) => Some(v),
                (In::Put(_, Cond::IfMatch(v)), Some(Out::Stored))
                | (In::Delete(Cond::IfMatch(v)), Some(Out::Deleted)) => Some(v),
                _ => None,
            };
            let n = if op.output.is_some() {
                &mut done
            } else {
                &mut pending
            };
            op.slot = *n;
            *n += 1;
        }
        let times: Vec<(Nanos, Nanos)> = kept
            .iter()
            .map(|&i| {
                let o = &all[i];
                match o.outcome {
                    Outcome::Unknown => (o.call, Nanos::MAX),
                    _ => (o.call, o.ret.max(o.call).min(Nanos::MAX - 1)),
                }
            })
            .collect();
        // Equal ops (same input and answer, or both pending with the same
        // input) in time order: X before Y when X was called no later and
        // returned no later (a pending op returns at infinity). Any order
        // can be rearranged into one that keeps all these (swap an inverted
        // pair: the state sequence is the same and real time still holds),
        // so the search need only try those. Each op waits for the nearest
        // such X among the few equal ops called just before it.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&j| (times[j].0, times[j].1, j));
        let mut groups: HashMap<EqualOps, Vec<usize>> = HashMap::new();
        for j in order {
            let group = groups.entry((ops[j].input, ops[j].output)).or_default();
            ops[j].after = group
                .iter()
                .rev()
                .take(EQUAL_OPS_LOOKBACK)
                .find(|&&x| times[x].1 <= times[j].1)
                .copied();
            group.push(j);
        }
        let mut entries: Vec<(usize, bool)> = (0..ops.len())
            .flat_map(|j| [(j, true), (j, false)])
            .collect();
        entries.sort_by_key(|&(j, call)| {
            let t = if call { times[j].0 } else { times[j].1 };
            // At one instant, calls first: touching operations overlap.
            (t, !call, j)
        });
        Prepared {
            ops,
            values,
            index,
            entries,
            times,
        }
    }

    fn hidden(&self) -> Val {
        self.values.len() as Val
    }

    fn view(&self, s: State) -> StateView {
        match s {
            None => StateView::Absent,
            Some(v) if v == self.hidden() => StateView::Unobserved,
            Some(v) => StateView::Value(self.values[v as usize]),
        }
    }

    /// The initial states to try for `init`.
    fn initial_states<K>(&self, all: &[Operation<K>], init: Init) -> Vec<State> {
        match init {
            Init::Absent => vec![None],
            Init::Value(v) => vec![Some(self.index.get(&v).copied().unwrap_or(self.hidden()))],
            Init::Unknown => {
                let written: HashSet<ValueId> =
                    all.iter().filter_map(|o| o.input.written()).collect();
                let mut c = vec![None, Some(self.hidden())];
                c.extend(
                    (0..self.values.len())
                        .filter(|&v| !written.contains(&self.values[v]))
                        .take(MAX_UNWRITTEN_CANDIDATES)
                        .map(|v| Some(v as Val)),
                );
                c
            }
        }
    }

    /// The next state if `op`'s answer fits `state`.
    fn step(&self, state: State, op: &Op) -> Option<State> {
        let (out, next) = apply(state, op.input);
        match op.output {
            Some(o) if o != out => None,
            _ => Some(next),
        }
    }

    fn search(&self, init: State, budget: &Budget, steps: &mut u64) -> Search {
        const NIL: usize = usize::MAX;
        const HEAD: usize = 0;
        // Doubly linked list over the entries; node 0 is the head.
        let n = self.entries.len();
        let mut next: Vec<usize> = (1..=n + 1).collect();
        next[n] = NIL;
        let mut prev: Vec<usize> = (0..=n).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NIL;
        // Node of each op's call and return.
        let mut call_node = vec![0usize; self.ops.len()];
        let mut ret_node = vec![0usize; self.ops.len()];
        for (k, &(j, is_call)) in self.entries.iter().enumerate() {
            if is_call {
                call_node[j] = k + 1;
            } else {
                ret_node[j] = k + 1;
            }
        }
        let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, j: usize| {
            for node in [call_node[j], ret_node[j]] {
                next[prev[node]] = next[node];
                if next[node] != NIL {
                    prev[next[node]] = prev[node];
                }
            }
        };
        let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, j: usize| {
            for node in [ret_node[j], call_node[j]] {
                next[prev[node]] = node;
                if next[node] != NIL {
                    prev[next[node]] = node;
                }
            }
        };

        let pending = self.ops.iter().filter(|o| o.output.is_none()).count();
        let mut linearized = Linearized {
            done: Bits::new(self.ops.len() - pending),
            pending: Bits::new(pending),
        };
        let mut cache = Seen::default();
        let mut left = Pending::new(&self.ops, self.values.len());
        let mut calls: Vec<(usize, State)> = Vec::new();
        let mut state = init;
        let mut stuck: Option<Stuck> = None;
        let mut node = next[HEAD];
        // Pending returns are last in the list: reaching one ends the search.
        while next[HEAD] != NIL {
            *steps += 1;
            if *steps > budget.max_steps {
                return Search::OutOfBudget(format!(
                    "search budget of {} steps used up ({} of {} operations placed at most)",
                    budget.max_steps,
                    stuck.as_ref().map_or(calls.len(), |s| s.prefix.len()),
                    self.ops.len()
                ));
            }
            if steps.is_multiple_of(DEADLINE_EVERY)
                && budget.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Search::OutOfBudget("the check's time budget ran out".to_owned());
            }
            let (j, is_call) = self.entries[node - 1];
            if is_call {
                let op = &self.ops[j];
                let allowed = op.after.is_none_or(|a| linearized.has(&self.ops[a]));
                if let Some(after) = allowed.then(|| self.step(state, op)).flatten() {
                    left.take(op);
                    linearized.set(op, true);
                    let strands = left.strands(state, after);
                    if strands
                        && stuck
                            .as_ref()
                            .is_none_or(|s| calls.len() + 1 > s.prefix.len())
                    {
                        // Explain it as the stranded op failing after this one.
                        let v = state.expect("only a value can be left");
                        let unplaced = (0..self.ops.len())
                            .filter(|&i| {
                                self.ops[i].needs == Some(v) && !linearized.has(&self.ops[i])
                            })
                            .min_by_key(|&i| self.times[i].1);
                        if let Some(unplaced) = unplaced {
                            let mut prefix: Vec<usize> = calls.iter().map(|&(c, _)| c).collect();
                            prefix.push(j);
                            stuck = Some(Stuck {
                                prefix,
                                unplaced,
                                state: after,
                            });
                        }
                    }
                    if !strands && !cache.subsumes(&linearized, after) {
                        calls.push((j, state));
                        state = after;
                        lift(&mut next, &mut prev, j);
                        node = next[HEAD];
                        continue;
                    }
                    linearized.set(op, false);
                    left.release(op);
                }
                node = next[node];
            } else if self.ops[j].output.is_none() {
                // Only pending ops are left, and they may all come last (or
                // never have happened).
                return Search::Linearizable;
            } else {
                // Op j returned, yet it could not be placed: backtrack.
                if stuck.as_ref().is_none_or(|s| calls.len() > s.prefix.len()) {
                    stuck = Some(Stuck {
                        prefix: calls.iter().map(|&(c, _)| c).collect(),
                        unplaced: j,
                        state,
                    });
                }
                let Some((c, s)) = calls.pop() else {
                    return Search::Stuck(stuck.expect("recorded just above"));
                };
                cache.finished(&linearized, state);
                if cache.words > MAX_MEMO_WORDS {
                    return Search::OutOfBudget(format!(
                        "the memo of refuted points reached {} MiB",
                        (cache.words * 8) >> 20
                    ));
                }
                left.release(&self.ops[c]);
                state = s;
                linearized.set(&self.ops[c], false);
                unlift(&mut next, &mut prev, c);
                node = next[call_node[c]];
            }
        }
        Search::Linearizable
    }

    fn explain<K>(&self, all: &[Operation<K>], init: State, s: &Stuck) -> Explanation {
        let prefix: Vec<usize> = s.prefix.iter().map(|&j| self.ops[j].orig).collect();
        let unplaced = self.ops[s.unplaced].orig;
        // The search keeps unobserved values as one; replaying the prefix
        // on the real values names the one the key held.
        let state = match self.view(init) {
            StateView::Unobserved => self.view(s.state),
            start => {
                let mut real = match start {
                    StateView::Value(v) => Some(v),
                    _ => None,
                };
                for &i in &prefix {
                    real = crate::model::step(real, all[i].input).1;
                }
                match real {
                    None => StateView::Absent,
                    Some(v) => StateView::Value(v),
                }
            }
        };
        let mut t = format!(
            "no order of the key's {} operations ({} after dropping failed ones and \
             pending reads) is linearizable, starting from {}.\n",
            all.len(),
            self.ops.len(),
            self.view(init)
        );
        t.push_str(&format!(
            "longest linearizable prefix: {} operation(s)",
            prefix.len()
        ));
        if prefix.is_empty() {
            t.push_str(".\n");
        } else {
            let skip = prefix.len().saturating_sub(EXPLAIN_PREFIX_OPS);
            t.push_str(&format!("{}:\n", if skip > 0 { ", ending" } else { "" }));
            for &i in &prefix[skip..] {
                t.push_str(&format!("  #{i} {}\n", all[i].describe()));
            }
        }
        t.push_str(&format!("state after it: {state}\n"));
        let u = &all[unplaced];
        t.push_str(&format!(
            "cannot place next: #{unplaced} {}\n",
            u.describe()
        ));
        if let Outcome::Ok(crate::history::Output::Value(Some(v))) = u.outcome {
            if !all.iter().any(|o| o.input.written() == Some(v)) {
                t.push_str(&format!("  (no operation of this key wrote v{v})\n"));
            } else if let Some(w) = all.iter().position(|o| o.input.written() == Some(v)) {
                if all[w].outcome == Outcome::Failed {
                    t.push_str(&format!(
                        "  (v{v} was written only by #{w}, which is recorded as failed: it must have had no effect)\n"
                    ));
                }
            }
        }
        // What else was in flight when it returned.
        let in_prefix: HashSet<usize> = prefix.iter().copied().collect();
        let ret = match u.outcome {
            Outcome::Unknown => Nanos::MAX,
            _ => u.ret,
        };
        let concurrent: Vec<usize> = self
            .ops
            .iter()
            .map(|o| o.orig)
            .filter(|&i| i != unplaced && !in_prefix.contains(&i) && all[i].call <= ret)
            .collect();
        if !concurrent.is_empty() {
            t.push_str("not yet placed, called before it returned:\n");
            for &i in concurrent.iter().take(EXPLAIN_CONCURRENT_OPS) {
                t.push_str(&format!("  #{i} {}\n", all[i].describe()));
            }
            if concurrent.len() > EXPLAIN_CONCURRENT_OPS {
                t.push_str(&format!(
                    "  ... {} more\n",
                    concurrent.len() - EXPLAIN_CONCURRENT_OPS
                ));
            }
        }
        Explanation {
            init: self.view(init),
            prefix,
            unplaced,
            state,
            text: t,
        }
    }
}
