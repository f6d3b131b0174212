//! What a history is made of: one [`Operation`] per request a client made,
//! with its key, call and return times, what it asked ([`Input`]) and what
//! it learned ([`Outcome`]). Recording them is the caller's; judging them is
//! `checker`'s and `summary`'s.

use serde::{Deserialize, Serialize};

/// The identity of a written value. Values are opaque to the checker: a
/// writer writes a value no other write of the history writes, so reading
/// it names the write.
pub type ValueId = u64;

/// Times are nanoseconds on one monotonic clock (any origin).
pub type Nanos = u64;

/// The condition a write puts on the key's current value (cellkv's
/// `If-None-Match: *` and `If-Match: <etag>`; an etag names a value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precondition {
    /// Unconditional.
    None,
    /// Only if the key has no value.
    IfAbsent,
    /// Only if the key holds this value.
    IfMatch(ValueId),
}

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Get,
    Put {
        value: ValueId,
        precondition: Precondition,
    },
    Delete {
        precondition: Precondition,
    },
}

/// What a completed operation answered. The model gives the same answers
/// as cellkv's object rules (`cell/src/objects.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A `Get`'s answer: the value, or `None` (404).
    Value(Option<ValueId>),
    /// A `Put` took effect.
    Stored,
    /// A `Delete` removed the value.
    Deleted,
    /// A `Delete` found nothing to remove (with no precondition, or one
    /// other than `IfAbsent`, that held or not).
    NotFound,
    /// The precondition did not hold; nothing changed (412).
    PreconditionFailed,
}

/// What the client knows about the operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect once, somewhere between call and return, and answered this.
    Ok(Output),
    /// It definitely had no effect (refused before it was executed): the
    /// checker drops it.
    Failed,
    /// It may or may not have taken effect, at any time after its call
    /// (timeout, connection cut after sending): its return time counts as
    /// infinity and its answer as unobserved.
    Unknown,
}

/// One request of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<K> {
    pub key: K,
    /// Who issued it (for explanations only; the checker does not need it).
    #[serde(default)]
    pub client: u64,
    /// When the request was sent.
    pub call: Nanos,
    /// When its answer (or error) arrived. Ignored for `Outcome::Unknown`.
    pub ret: Nanos,
    pub input: Input,
    pub outcome: Outcome,
}

/// What a key held before the history began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Nothing (a fresh store).
    Absent,
    Value(ValueId),
    /// Not known (a store used before): nothing, or one value no operation
    /// of the history wrote.
    Unknown,
}

impl Input {
    /// The value this operation writes, if any.
    pub fn written(&self) -> Option<ValueId> {
        match self {
            Input::Put { value, .. } => Some(*value),
            _ => None,
        }
    }
}

/// `v17`, or `absent`: how explanations name a register state.
pub fn state_text(state: Option<ValueId>) -> String {
    match state {
        Some(v) => format!("v{v}"),
        None => "absent".to_owned(),
    }
}

fn precondition_text(p: Precondition) -> String {
    match p {
        Precondition::None => String::new(),
        Precondition::IfAbsent => " if-absent".to_owned(),
        Precondition::IfMatch(v) => format!(" if-match v{v}"),
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Get => f.write_str("get"),
            Input::Put {
                value,
                precondition,
            } => write!(f, "put v{value}{}", precondition_text(*precondition)),
            Input::Delete { precondition } => {
                write!(f, "delete{}", precondition_text(*precondition))
            }
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Value(v) => f.write_str(&state_text(*v)),
            Output::Stored => f.write_str("stored"),
            Output::Deleted => f.write_str("deleted"),
            Output::NotFound => f.write_str("not found"),
            Output::PreconditionFailed => f.write_str("precondition failed"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok(o) => write!(f, "{o}"),
            Outcome::Failed => f.write_str("failed (no effect)"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

/// Seconds with microseconds, for explanations: `12.345678s`.
pub fn time_text(t: Nanos) -> String {
    format!("{}.{:06}s", t / 1_000_000_000, (t % 1_000_000_000) / 1_000)
}

impl<K> Operation<K> {
    /// `client 3: put v17 -> stored [1.000000s, 1.002000s]`.
    pub fn describe(&self) -> String {
        let ret = match self.outcome {
            Outcome::Unknown => "∞".to_owned(),
            _ => time_text(self.ret),
        };
        format!(
            "client {}: {} -> {} [{}, {}]",
            self.client,
            self.input,
            self.outcome,
            time_text(self.call),
            ret
        )
    }
}
