//! Known histories (each a small story with its verdict), histories from
//! real sequential executions with random overlapping intervals (all
//! linearizable) with planted stale reads (caught), and a brute-force
//! cross-check on tiny random histories.

use std::time::{Duration, Instant};

use crate::checker::{check_key, Budget, KeyVerdict, StateView};
use crate::history::{Init, Input, Operation, Outcome, Output, Precondition, ValueId};
use crate::model::step;
use crate::summary::{check_history, CheckConfig};

type Op = Operation<&'static str>;

/// Times in the stories are milliseconds.
fn op(client: u64, call: u64, ret: u64, input: Input, outcome: Outcome) -> Op {
    Operation {
        key: "k",
        client,
        call: call * 1_000_000,
        ret: ret * 1_000_000,
        input,
        outcome,
    }
}

fn put_in(v: ValueId) -> Input {
    Input::Put {
        value: v,
        precondition: Precondition::None,
    }
}

fn get(c: u64, call: u64, ret: u64, v: Option<ValueId>) -> Op {
    op(c, call, ret, Input::Get, Outcome::Ok(Output::Value(v)))
}

fn put(c: u64, call: u64, ret: u64, v: ValueId) -> Op {
    op(c, call, ret, put_in(v), Outcome::Ok(Output::Stored))
}

fn put_if(c: u64, call: u64, ret: u64, v: ValueId, p: Precondition, out: Output) -> Op {
    op(
        c,
        call,
        ret,
        Input::Put {
            value: v,
            precondition: p,
        },
        Outcome::Ok(out),
    )
}

fn pending_put(c: u64, call: u64, v: ValueId) -> Op {
    op(c, call, 0, put_in(v), Outcome::Unknown)
}

fn del(c: u64, call: u64, ret: u64, out: Output) -> Op {
    op(
        c,
        call,
        ret,
        Input::Delete {
            precondition: Precondition::None,
        },
        Outcome::Ok(out),
    )
}

fn verdict(ops: &[Op]) -> KeyVerdict {
    check_key(ops, Init::Absent, &Budget::default())
}

fn must_pass(ops: &[Op]) {
    let v = verdict(ops);
    assert_eq!(v, KeyVerdict::Linearizable, "{ops:#?}");
}

/// Asserts the history is not linearizable; returns the explanation's text.
fn must_fail(ops: &[Op]) -> String {
    match verdict(ops) {
        KeyVerdict::NotLinearizable(e) => e.text,
        other => panic!("expected a violation, got {other:?} for {ops:#?}"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    must_pass(&[
        get(1, 0, 1, None),
        put(1, 2, 3, 1),
        get(2, 4, 5, Some(1)),
        put(2, 6, 7, 2),
        get(1, 8, 9, Some(2)),
        del(1, 10, 11, Output::Deleted),
        get(2, 12, 13, None),
    ]);
    must_pass(&[]);
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order() {
    let base = [put(1, 0, 10, 1), put(2, 1, 9, 2)];
    for (a, b) in [(1, 2), (2, 1)] {
        let mut h = base.to_vec();
        h.push(get(3, 2, 4, Some(a)));
        h.push(get(4, 5, 11, Some(b)));
        h.push(get(5, 12, 13, Some(b)));
        must_pass(&h);
        // Once both are done, the one read last must stay.
        let mut h = base.to_vec();
        h.push(get(3, 2, 4, Some(a)));
        h.push(get(4, 5, 11, Some(b)));
        h.push(get(5, 12, 13, Some(a)));
        must_fail(&h);
        // Overlapping reads may be ordered either way round.
        let mut h = base.to_vec();
        h.push(get(3, 2, 8, Some(a)));
        h.push(get(4, 3, 11, Some(b)));
        h.push(get(5, 12, 13, Some(a)));
        must_pass(&h);
    }
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let text = must_fail(&[put(1, 0, 1, 1), put(2, 2, 3, 2), get(3, 4, 5, Some(1))]);
    assert!(
        text.contains("cannot place next: #2 client 3: get -> v1"),
        "{text}"
    );
    assert!(text.contains("state after it: v2"), "{text}");
    // Overlapping the second write, the old value is fine.
    must_pass(&[put(1, 0, 1, 1), put(2, 2, 6, 2), get(3, 4, 5, Some(1))]);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    let text = must_fail(&[put(1, 0, 1, 1), get(2, 2, 3, Some(9))]);
    assert!(text.contains("no operation of this key wrote v9"), "{text}");
    // A write recorded as failed had no effect: reading it is a violation.
    let text = must_fail(&[
        op(1, 0, 1, put_in(7), Outcome::Failed),
        get(2, 2, 3, Some(7)),
    ]);
    assert!(text.contains("recorded as failed"), "{text}");
}

#[test]
fn read_your_write_violation_is_caught() {
    must_fail(&[put(1, 0, 1, 1), get(1, 2, 3, None)]);
    must_fail(&[put(1, 0, 1, 1), put(1, 2, 3, 2), get(1, 4, 5, Some(1))]);
}

#[test]
fn pending_writes_may_take_effect_late_or_never() {
    // Called at 0, never answered, read at 5.
    must_pass(&[pending_put(1, 0, 1), get(2, 5, 6, Some(1))]);
    // Never observed: it may never have happened.
    must_pass(&[
        put(1, 0, 1, 1),
        pending_put(2, 2, 2),
        get(3, 3, 4, Some(1)),
        get(3, 10, 11, Some(1)),
    ]);
    // Seen, then not seen: it took effect, so it stays unless overwritten.
    must_fail(&[
        put(1, 0, 1, 1),
        pending_put(2, 2, 2),
        get(3, 3, 4, Some(2)),
        get(3, 10, 11, Some(1)),
    ]);
    // But not before it was called.
    must_fail(&[get(1, 0, 1, Some(1)), pending_put(2, 2, 1)]);
    // A pending read tells nothing.
    must_pass(&[put(1, 0, 1, 1), op(2, 2, 0, Input::Get, Outcome::Unknown)]);
}

#[test]
fn new_then_old_read_is_caught() {
    let text = must_fail(&[
        put(1, 0, 1, 1),
        put(2, 2, 10, 2),
        get(3, 3, 4, Some(2)),
        get(4, 5, 6, Some(1)),
    ]);
    assert!(text.contains("#3 client 4: get -> v1"), "{text}");
    // Overlapping reads may see the values either way round.
    must_pass(&[
        put(1, 0, 1, 1),
        put(2, 2, 10, 2),
        get(3, 3, 6, Some(2)),
        get(4, 4, 7, Some(1)),
    ]);
}

#[test]
fn put_if_absent_has_one_winner() {
    use Output::{PreconditionFailed, Stored};
    use Precondition::IfAbsent;
    must_fail(&[
        put_if(1, 0, 5, 1, IfAbsent, Stored),
        put_if(2, 1, 6, 2, IfAbsent, Stored),
    ]);
    must_pass(&[
        put_if(1, 0, 5, 1, IfAbsent, Stored),
        put_if(2, 1, 6, 2, IfAbsent, PreconditionFailed),
        get(3, 7, 8, Some(1)),
    ]);
    // A conflict needs a value to conflict with.
    must_fail(&[put_if(1, 0, 5, 1, IfAbsent, PreconditionFailed)]);
    // A pending write can be that value.
    must_pass(&[
        pending_put(2, 0, 9),
        put_if(1, 1, 5, 1, IfAbsent, PreconditionFailed),
    ]);
}

#[test]
fn if_match_read_modify_writes_do_not_both_win() {
    use Output::{PreconditionFailed, Stored};
    use Precondition::IfMatch;
    let start = [
        put(1, 0, 1, 1),
        get(2, 2, 3, Some(1)),
        get(3, 2, 3, Some(1)),
    ];
    let mut h = start.to_vec();
    h.push(put_if(2, 4, 8, 2, IfMatch(1), Stored));
    h.push(put_if(3, 5, 9, 3, IfMatch(1), Stored));
    must_fail(&h);
    let mut h = start.to_vec();
    h.push(put_if(2, 4, 8, 2, IfMatch(1), Stored));
    h.push(put_if(3, 5, 9, 3, IfMatch(1), PreconditionFailed));
    h.push(get(1, 10, 11, Some(2)));
    must_pass(&h);
}

#[test]
fn delete_semantics() {
    must_pass(&[del(1, 0, 1, Output::NotFound), get(1, 2, 3, None)]);
    must_fail(&[del(1, 0, 1, Output::Deleted)]);
    must_pass(&[
        put(1, 0, 1, 1),
        del(2, 2, 3, Output::Deleted),
        get(1, 4, 5, None),
        put(1, 6, 7, 2),
        get(2, 8, 9, Some(2)),
    ]);
    // A completed delete is not undone.
    must_fail(&[
        put(1, 0, 1, 1),
        del(2, 2, 3, Output::Deleted),
        get(1, 4, 5, Some(1)),
    ]);
    // Two deletes of one value: only one removes it.
    must_fail(&[
        put(1, 0, 1, 1),
        del(2, 2, 5, Output::Deleted),
        del(3, 2, 5, Output::Deleted),
    ]);
    let if_match = |v| Input::Delete {
        precondition: Precondition::IfMatch(v),
    };
    must_pass(&[
        put(1, 0, 1, 1),
        op(
            2,
            2,
            3,
            if_match(9),
            Outcome::Ok(Output::PreconditionFailed),
        ),
        op(2, 4, 5, if_match(1), Outcome::Ok(Output::Deleted)),
        get(1, 6, 7, None),
    ]);
}

#[test]
fn unknown_initial_state_allows_one_unwritten_value() {
    let h = [
        get(1, 0, 1, Some(70)),
        put(1, 2, 3, 1),
        get(2, 4, 5, Some(1)),
    ];
    assert_eq!(
        check_key(&h, Init::Unknown, &Budget::default()),
        KeyVerdict::Linearizable
    );
    assert_eq!(
        check_key(&h, Init::Value(70), &Budget::default()),
        KeyVerdict::Linearizable
    );
    assert!(matches!(
        check_key(&h, Init::Absent, &Budget::default()),
        KeyVerdict::NotLinearizable(_)
    ));
    // Two different values before any write: not one initial state.
    let h = [get(1, 0, 1, Some(70)), get(2, 2, 3, Some(71))];
    assert!(matches!(
        check_key(&h, Init::Unknown, &Budget::default()),
        KeyVerdict::NotLinearizable(_)
    ));
    // Some unobserved value explains a conflict on a key never written here.
    let h = [put_if(
        1,
        0,
        1,
        1,
        Precondition::IfAbsent,
        Output::PreconditionFailed,
    )];
    assert_eq!(
        check_key(&h, Init::Unknown, &Budget::default()),
        KeyVerdict::Linearizable
    );
}

#[test]
fn explanation_names_the_prefix_the_state_and_concurrent_ops() {
    let h = [
        put(1, 0, 1, 1),
        put(2, 2, 3, 2),
        get(4, 4, 20, Some(1)),
        get(3, 5, 6, Some(1)),
    ];
    let KeyVerdict::NotLinearizable(e) = verdict(&h) else {
        panic!("expected a violation")
    };
    assert_eq!(e.init, StateView::Absent);
    assert_eq!(e.unplaced, 3, "{e:#?}");
    assert_eq!(e.prefix, [0, 1]);
    assert_eq!(e.state, StateView::Value(2));
    assert!(
        e.text.contains("not yet placed, called before it returned"),
        "{}",
        e.text
    );
    assert!(
        e.text
            .contains("#2 client 4: get -> v1 [0.004000s, 0.020000s]"),
        "{}",
        e.text
    );
}

#[test]
fn a_cut_short_search_is_never_linearizable() {
    // Eight overlapping writes, each read once after all returned: no order.
    let mut h: Vec<Op> = (1..=8).map(|v| put(v, 0, 100, v)).collect();
    for v in 1..=8 {
        h.push(get(v, 200 + v * 2, 201 + v * 2, Some(v)));
    }
    let tiny = Budget {
        max_steps: 10,
        deadline: None,
    };
    assert!(matches!(
        check_key(&h, Init::Absent, &tiny),
        KeyVerdict::Unknown { .. }
    ));
    let past = Budget {
        max_steps: u64::MAX,
        deadline: Some(Instant::now()),
    };
    let ok = vec![put(1, 0, 1, 1)];
    // A deadline is looked at every few thousand steps: small keys finish.
    assert_eq!(
        check_key(&ok, Init::Absent, &past),
        KeyVerdict::Linearizable
    );
    assert!(matches!(
        check_key(&h, Init::Absent, &Budget::default()),
        KeyVerdict::NotLinearizable(_)
    ));
}

#[test]
fn many_pending_writes_stay_cheap() {
    // 200 timed-out writes nobody read, then reads of a completed write's
    // value: without merging equal pending ops this is 2^200 subsets.
    let mut h = vec![put(0, 0, 1, 1)];
    for i in 0..200 {
        h.push(pending_put(i + 1, 2 + i, 1000 + i));
    }
    for i in 0..50 {
        h.push(put(300, 1000 + 4 * i, 1001 + 4 * i, 2 + i));
        h.push(get(301, 1002 + 4 * i, 1003 + 4 * i, Some(2 + i)));
    }
    let started = Instant::now();
    must_pass(&h);
    // And one observed pending write among them.
    h.push(pending_put(400, 5000, 5000));
    h.push(get(401, 6000, 6001, Some(5000)));
    must_pass(&h);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// Randomized

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history of `n` operations on `keys` keys from a real sequential
/// execution: op i takes effect at 10·i, inside a random interval around it.
fn real_history(rng: &mut Rng, n: u64, keys: u32) -> Vec<Operation<u32>> {
    let mut state: Vec<Option<ValueId>> = vec![None; keys as usize];
    let mut written: Vec<Vec<ValueId>> = vec![Vec::new(); keys as usize];
    let mut out = Vec::new();
    for i in 0..n {
        let key = rng.below(u64::from(keys)) as u32;
        let k = key as usize;
        let t = 100 + 10 * i;
        let value = i + 1;
        let input = match rng.below(10) {
            0..=3 => Input::Get,
            4..=5 => put_in(value),
            6 => Input::Put {
                value,
                precondition: Precondition::IfAbsent,
            },
            7 => {
                // Usually the current value, sometimes an old one.
                let expect = match (rng.below(2), written[k].last()) {
                    (0, _) | (_, None) => state[k].unwrap_or(0),
                    (_, Some(&w)) => w,
                };
                Input::Put {
                    value,
                    precondition: Precondition::IfMatch(expect),
                }
            }
            8 => Input::Delete {
                precondition: Precondition::None,
            },
            _ => Input::Delete {
                precondition: Precondition::IfMatch(state[k].unwrap_or(0)),
            },
        };
        let call = t - rng.below(40);
        let ret = t + rng.below(40);
        let client = rng.below(8);
        // 3% fail (no effect), 3% time out without effect, 5% time out after it.
        let roll = rng.below(100);
        let outcome = if roll < 6 {
            if roll < 3 {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        } else {
            let (o, next) = step(state[k], input);
            state[k] = next;
            if let Input::Put { value, .. } = input {
                if o == Output::Stored {
                    written[k].push(value);
                }
            }
            if roll < 11 {
                Outcome::Unknown
            } else {
                Outcome::Ok(o)
            }
        };
        out.push(Operation {
            key,
            client,
            call,
            ret,
            input,
            outcome,
        });
    }
    out
}

/// Turns a read into a stale read: a get that began after a completed
/// write W2 returned, where W2 began after an older completed write W1
/// returned, now answers W1's value. Returns the key, if one was found.
fn plant_stale_read(h: &mut [Operation<u32>]) -> Option<u32> {
    let stored = |o: &Operation<u32>| {
        matches!(o.input, Input::Put { .. }) && o.outcome == Outcome::Ok(Output::Stored)
    };
    for r in 0..h.len() {
        if h[r].input != Input::Get || !matches!(h[r].outcome, Outcome::Ok(_)) {
            continue;
        }
        let key = h[r].key;
        let Some(w2) = h
            .iter()
            .filter(|o| o.key == key && stored(o) && o.ret < h[r].call)
            .max_by_key(|o| o.ret)
        else {
            continue;
        };
        let old = h.iter().find(|o| {
            o.key == key && stored(o) && o.ret < w2.call && o.input.written() != w2.input.written()
        });
        if let Some(w1) = old {
            let v = w1.input.written();
            if h[r].outcome != Outcome::Ok(Output::Value(v)) {
                h[r].outcome = Outcome::Ok(Output::Value(v));
                return Some(key);
            }
        }
    }
    None
}

#[test]
fn real_executions_pass_and_planted_stale_reads_are_caught() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cfg = CheckConfig::default();
    let mut planted = 0;
    for round in 0..40 {
        let mut h = real_history(&mut rng, 400, 3);
        let s = check_history(h.clone(), |_| Init::Absent, &cfg);
        assert!(
            s.all_linearizable(),
            "round {round}: {:#?}",
            (s.violations.first(), s.undecided.first())
        );
        assert_eq!(s.ops, 400);
        if let Some(key) = plant_stale_read(&mut h) {
            planted += 1;
            let s = check_history(h, |_| Init::Absent, &cfg);
            assert_eq!(s.not_linearizable, 1, "round {round}");
            assert_eq!(s.violations[0].key, key.to_string());
        }
    }
    assert!(planted > 30, "only {planted} stale reads planted");
}

/// Whether some order of `ops` (pending ones anywhere, or left out) fits the
/// register from `init` and real time: tries every permutation.
fn brute_force(ops: &[Op], init: Option<ValueId>) -> bool {
    let kept: Vec<&Op> = ops
        .iter()
        .filter(|o| o.outcome != Outcome::Failed)
        .collect();
    fn go(kept: &[&Op], used: &mut Vec<bool>, state: Option<ValueId>) -> bool {
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..kept.len() {
            if used[i] {
                continue;
            }
            // Every op that returned before i's call must already be placed.
            let blocked = (0..kept.len()).any(|j| {
                !used[j]
                    && j != i
                    && kept[j].outcome != Outcome::Unknown
                    && kept[j].ret < kept[i].call
            });
            if blocked {
                continue;
            }
            let (out, next) = step(state, kept[i].input);
            let fits = match kept[i].outcome {
                Outcome::Ok(o) => o == out,
                _ => true,
            };
            if fits {
                used[i] = true;
                if go(kept, used, next) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    go(&kept, &mut vec![false; kept.len()], init)
}

#[test]
fn agrees_with_brute_force_on_tiny_random_histories() {
    let mut rng = Rng(42);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let n = 1 + rng.below(6);
        let h: Vec<Op> = (0..n)
            .map(|_| {
                let v = 1 + rng.below(3);
                let input = match rng.below(6) {
                    0 | 1 => Input::Get,
                    2 => put_in(v),
                    3 => Input::Put {
                        value: v,
                        precondition: Precondition::IfAbsent,
                    },
                    4 => Input::Put {
                        value: v,
                        precondition: Precondition::IfMatch(1 + rng.below(3)),
                    },
                    _ => Input::Delete {
                        precondition: Precondition::None,
                    },
                };
                let output = match input {
                    Input::Get => {
                        Output::Value([None, Some(1), Some(2), Some(3)][rng.below(4) as usize])
                    }
                    Input::Put { .. } => {
                        [Output::Stored, Output::PreconditionFailed][rng.below(2) as usize]
                    }
                    Input::Delete { .. } => {
                        [Output::Deleted, Output::NotFound][rng.below(2) as usize]
                    }
                };
                let outcome = match rng.below(10) {
                    0 => Outcome::Unknown,
                    1 => Outcome::Failed,
                    _ => Outcome::Ok(output),
                };
                let call = rng.below(20);
                op(rng.below(3), call, call + rng.below(10), input, outcome)
            })
            .collect();
        let want = brute_force(&h, None);
        let got = verdict(&h);
        assert_eq!(got == KeyVerdict::Linearizable, want, "{h:#?}: {got:?}");
        if want {
            yes += 1;
        } else {
            no += 1;
        }
        // Unknown initial state: absent, or a value no op of it writes.
        let want = (0..=4)
            .filter(|&v| !h.iter().any(|o| o.input.written() == Some(v)))
            .any(|v| brute_force(&h, (v > 0).then_some(v)));
        let got = check_key(&h, Init::Unknown, &Budget::default());
        assert_eq!(
            got == KeyVerdict::Linearizable,
            want,
            "unknown init: {h:#?}: {got:?}"
        );
    }
    assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
}

#[test]
fn history_types_are_serde() {
    // Saved and loaded as JSON lines by the harness (with serde_json).
    fn is_serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}
    is_serde::<Operation<String>>();
    is_serde::<Init>();
    is_serde::<crate::summary::Summary<u64>>();
}

#[test]
fn a_hot_key_with_deep_overlap_is_checked_quickly() {
    // 5000 ops on one key, half writes, each overlapping ~40 others: the
    // load of a hot key behind a slowed cell. Planted stale read included.
    let mut rng = Rng(7);
    let mut h = Vec::new();
    let mut state = None;
    for i in 0..5000u64 {
        let t = 1000 + 10 * i;
        let input = if rng.below(2) == 0 {
            Input::Get
        } else {
            put_in(i + 1)
        };
        let roll = rng.below(100);
        let (o, next) = step(state, input);
        let outcome = if roll < 3 {
            Outcome::Failed
        } else {
            state = next;
            if roll < 8 {
                Outcome::Unknown
            } else {
                Outcome::Ok(o)
            }
        };
        h.push(Operation {
            key: 0u32,
            client: i % 64,
            call: t - rng.below(200),
            ret: t + rng.below(200),
            input,
            outcome,
        });
    }
    let started = Instant::now();
    assert_eq!(
        check_key(&h, Init::Absent, &Budget::default()),
        KeyVerdict::Linearizable
    );
    plant_stale_read(&mut h).expect("a read to make stale");
    assert!(matches!(
        check_key(&h, Init::Absent, &Budget::default()),
        KeyVerdict::NotLinearizable(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
