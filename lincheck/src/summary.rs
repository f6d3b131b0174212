//! A whole history: split by key (each key is an independent register, so
//! the history is linearizable exactly when every key's is), check each key
//! and count the verdicts, keeping the first few violations in full.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checker::{check_key, Budget, Explanation, KeyVerdict};
use crate::history::{Init, Operation};

/// How a whole history is checked.
#[derive(Clone, Copy, Debug)]
pub struct CheckConfig {
    /// Search budget of each key (its deadline bounds the whole check).
    pub budget: Budget,
    /// Violations (and undecided keys) kept in full.
    pub max_listed: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            budget: Budget::default(),
            max_listed: 10,
        }
    }
}

/// One key that is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyViolation<K> {
    pub key: String,
    /// The key's operations (all of them, failed ones included), which the
    /// explanation's indexes point into: the evidence, to save or re-check.
    pub ops: Vec<Operation<K>>,
    pub explanation: Explanation,
}

/// One key the budget could not decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndecidedKey {
    pub key: String,
    pub ops: usize,
    pub reason: String,
}

/// The verdicts on a whole history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary<K> {
    pub keys: u64,
    pub ops: u64,
    pub linearizable: u64,
    pub not_linearizable: u64,
    /// Keys without a verdict (budget used up).
    pub unknown: u64,
    /// The first `max_listed` violations, by key order.
    pub violations: Vec<KeyViolation<K>>,
    pub undecided: Vec<UndecidedKey>,
    pub elapsed_ms: u64,
}

impl<K> Default for Summary<K> {
    fn default() -> Self {
        Summary {
            keys: 0,
            ops: 0,
            linearizable: 0,
            not_linearizable: 0,
            unknown: 0,
            violations: Vec::new(),
            undecided: Vec::new(),
            elapsed_ms: 0,
        }
    }
}

impl<K> Summary<K> {
    /// Every key was checked and found linearizable.
    pub fn all_linearizable(&self) -> bool {
        self.not_linearizable == 0 && self.unknown == 0
    }
}

/// Checks every key of `ops`; `init` tells each key's state before the history.
pub fn check_history<K, I>(ops: I, init: impl Fn(&K) -> Init, cfg: &CheckConfig) -> Summary<K>
where
    K: Ord + Clone + Display,
    I: IntoIterator<Item = Operation<K>>,
{
    let started = Instant::now();
    let mut by_key: BTreeMap<K, Vec<Operation<K>>> = BTreeMap::new();
    for op in ops {
        match by_key.get_mut(&op.key) {
            Some(v) => v.push(op),
            None => {
                by_key.insert(op.key.clone(), vec![op]);
            }
        }
    }
    let mut s = Summary::default();
    for (key, ops) in by_key {
        s.keys += 1;
        s.ops += ops.len() as u64;
        match check_key(&ops, init(&key), &cfg.budget) {
            KeyVerdict::Linearizable => s.linearizable += 1,
            KeyVerdict::NotLinearizable(explanation) => {
                s.not_linearizable += 1;
                if s.violations.len() < cfg.max_listed {
                    s.violations.push(KeyViolation {
                        key: key.to_string(),
                        ops,
                        explanation,
                    });
                }
            }
            KeyVerdict::Unknown { reason } => {
                s.unknown += 1;
                if s.undecided.len() < cfg.max_listed {
                    s.undecided.push(UndecidedKey {
                        key: key.to_string(),
                        ops: ops.len(),
                        reason,
                    });
                }
            }
        }
    }
    s.elapsed_ms = started.elapsed().as_millis() as u64;
    s
}
