//! A linearizability checker for key-value histories: each key is an
//! independent register (`model`), a history is a list of timed operations
//! (`history`), and each key's operations are searched for a legal order
//! (`checker`, Wing & Gong with Lowe's memoization); `summary` checks a whole
//! history key by key. Pure (std and serde): recording histories is the
//! caller's job. ADR 0019 says why and how it is used.

pub mod checker;
pub mod history;
pub mod model;
pub mod summary;

#[cfg(test)]
mod checker_test;

pub use checker::{check_key, Budget, Explanation, KeyVerdict, StateView};
pub use history::{Init, Input, Nanos, Operation, Outcome, Output, Precondition, ValueId};
pub use model::step;
pub use summary::{check_history, CheckConfig, KeyViolation, Summary, UndecidedKey};
