//! The run's history for the linearizability check: every keyed request's
//! call and return time (one monotonic clock), key, what it asked, the value
//! identity it wrote or read, and what its answer proves (`outcome_of`, the
//! rule below). Values carry their write's identity (`ValueCodec`). Memory
//! is bounded: past `max_ops`, a deterministic sample of keys is kept.
//! The search itself is `cellkv-lincheck`'s; sending requests is the driver's.
//!
//! What an answer proves about a request's effect (`outcome_of`):
//!
//! | answer | outcome | why |
//! |---|---|---|
//! | 2xx | ok (value, stored) | executed once |
//! | 404 to a GET | ok (absent) | a linearizable read found nothing |
//! | 412 to a conditional PUT | ok (precondition failed) | the cell decided it on the key's value |
//! | other 4xx | failed | refused before execution: validation, auth, 408 body timeout, 413, 429 |
//! | 503 (`cell_unavailable`, `range_moving`, ...) | failed | the router answers 503 only when nothing ran: its fast fails (breaker, bulkhead, isolation) happen before forwarding, and it passes a cell's refusal on as 503 only if the cell proved the write was not executed (`not_leader`, `no_leader`, `shutting_down`); an ambiguous outcome is 502 or 504 (`router/src/error.rs`, `cell_client.rs`) |
//! | 500, 502, 504, other | unknown | the cell may have applied it (timeout, connection cut after sending, a storage error mid-apply) |
//! | connect error, invalid request | failed | nothing was sent |
//! | client timeout, transport error, oversized or bad answer | unknown | it may have been sent and applied |

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::http::{HttpError, Resp};
use lincheck::{
    check_history, Budget, CheckConfig, Init, Input, Nanos, Operation, Outcome, Output,
    Precondition, Summary, ValueId,
};
use serde::{Deserialize, Serialize};

use crate::workload::splitmix64;

/// Bytes at the start of a value that carry its identity: the run's tag,
/// then the write's id (both u64 little-endian). Shorter values carry none.
pub const IDENTITY_LEN: usize = 16;
/// Identities of values this run did not write (or a shorter value) have
/// this bit set; this run's write ids stay below it.
const FOREIGN_BIT: u64 = 1 << 63;
/// Mixed into key ids to pick the sample (fixed: the same keys in every run).
const SAMPLE_SEED: u64 = 0x11ec_4eca_11ec_4eca;

/// A well-mixed hash of `x` (one splitmix64 step).
fn mix(x: u64) -> u64 {
    let mut s = x;
    splitmix64(&mut s)
}

/// Puts a write's identity into its value and reads it back out.
#[derive(Clone, Copy, Debug)]
pub struct ValueCodec {
    /// Distinguishes this run's values from those of earlier runs on the
    /// same cluster (whose write ids restart at 1).
    tag: u64,
}

impl ValueCodec {
    pub fn new(tag: u64) -> ValueCodec {
        ValueCodec { tag }
    }

    /// A tag from the clock and the scenario's seed: unique per run.
    pub fn for_run(seed: u64) -> ValueCodec {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        ValueCodec::new(mix(nanos ^ mix(seed)))
    }

    /// `len` bytes for write `id`: the identity, then `v` filler (the
    /// scenario's size is kept; below [`IDENTITY_LEN`] no identity fits).
    pub fn value(&self, id: u64, len: u32) -> Bytes {
        let mut v = vec![b'v'; len as usize];
        if v.len() >= IDENTITY_LEN {
            v[..8].copy_from_slice(&self.tag.to_le_bytes());
            v[8..16].copy_from_slice(&id.to_le_bytes());
        }
        Bytes::from(v)
    }

    /// The identity of a value read back: its write's id if this run wrote
    /// it, else a hash of its etag (which names the write that made it,
    /// kept when the object moves) or of its bytes, with [`FOREIGN_BIT`] set.
    pub fn identity(&self, body: &[u8], etag: Option<&str>) -> ValueId {
        if body.len() >= IDENTITY_LEN && body[..8] == self.tag.to_le_bytes() {
            let mut id = [0u8; 8];
            id.copy_from_slice(&body[8..16]);
            let id = u64::from_le_bytes(id);
            if id & FOREIGN_BIT == 0 {
                return id;
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match etag {
            Some(e) => e.trim_matches('"').hash(&mut h),
            None => body.hash(&mut h),
        }
        h.finish() | FOREIGN_BIT
    }
}

/// What the answer `res` to a request asking `input` proves (see the
/// module's table). `read` is the identity of a 2xx GET's value.
pub fn outcome_of(input: &Input, res: &Result<Resp, HttpError>, read: ValueId) -> Outcome {
    let conditional = matches!(
        input,
        Input::Put {
            precondition: Precondition::IfAbsent | Precondition::IfMatch(_),
            ..
        } | Input::Delete {
            precondition: Precondition::IfAbsent | Precondition::IfMatch(_),
        }
    );
    match res {
        Ok(r) if r.is_success() => Outcome::Ok(match input {
            Input::Get => Output::Value(Some(read)),
            Input::Put { .. } => Output::Stored,
            Input::Delete { .. } => Output::Deleted,
        }),
        Ok(r) if r.status == 404 && *input == Input::Get => Outcome::Ok(Output::Value(None)),
        Ok(r) if r.status == 404 && matches!(input, Input::Delete { .. }) => {
            Outcome::Ok(Output::NotFound)
        }
        Ok(r) if r.status == 412 && conditional => Outcome::Ok(Output::PreconditionFailed),
        Ok(r) if (400..500).contains(&r.status) || r.status == 503 => Outcome::Failed,
        Ok(_) => Outcome::Unknown,
        Err(HttpError::Connect { .. } | HttpError::InvalidRequest { .. }) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// `[history]`: how much of the run's history is kept and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Operations kept for the check (about 100 bytes each). Past it, half
    /// the keys (a fixed hash of their ids) are dropped, again as needed,
    /// and the report says which share was checked.
    pub max_ops: u64,
    /// Search steps per key before its verdict is "unknown".
    pub steps_per_key: u64,
    /// Longest the whole check may take; keys left are "unknown".
    pub check_time_s: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            max_ops: 2_000_000,
            steps_per_key: 2_000_000,
            check_time_s: 120,
        }
    }
}

/// The run's operations, keyed by workload key id; bounded by `max_ops`.
#[derive(Debug)]
pub struct History {
    max_ops: u64,
    ops: Vec<Operation<u64>>,
    /// Keys kept: those whose hash has its top `level` bits zero.
    level: u32,
    /// Operations recorded, kept or not.
    recorded: u64,
    /// When the history's clock reads zero.
    origin: Instant,
}

impl History {
    pub fn new(max_ops: u64, origin: Instant) -> History {
        History {
            max_ops: max_ops.max(1),
            ops: Vec::new(),
            level: 0,
            recorded: 0,
            origin,
        }
    }

    /// Nanoseconds since the origin: the history's clock.
    pub fn now(origin: Instant) -> Nanos {
        origin.elapsed().as_nanos() as Nanos
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn sampled(level: u32, key: u64) -> bool {
        level == 0 || mix(key ^ SAMPLE_SEED) >> (64 - level) == 0
    }

    pub fn push(&mut self, op: Operation<u64>) {
        self.recorded += 1;
        if !Self::sampled(self.level, op.key) {
            return;
        }
        self.ops.push(op);
        while self.ops.len() as u64 > self.max_ops && self.level < 63 {
            self.level += 1;
            let level = self.level;
            self.ops.retain(|o| Self::sampled(level, o.key));
        }
    }

    pub fn extend(&mut self, ops: impl IntoIterator<Item = Operation<u64>>) {
        for op in ops {
            self.push(op);
        }
    }

    /// Operations kept.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks every kept key; `init` is each key's state before the run,
    /// `name` names a key for the report.
    pub fn check(
        self,
        cfg: &HistoryConfig,
        init: Init,
        name: impl Fn(u64) -> String,
    ) -> (Linearizability, Vec<Operation<u64>>) {
        let check = CheckConfig {
            budget: Budget {
                max_steps: cfg.steps_per_key,
                deadline: Some(Instant::now() + Duration::from_secs(cfg.check_time_s)),
            },
            max_listed: MAX_LISTED,
        };
        let (recorded, level, kept) = (self.recorded, self.level, self.ops.len() as u64);
        let outcomes = outcome_counts(&self.ops);
        let mut s = check_history(self.ops, |_| init, &check);
        // The listed keys' whole histories, for a human (or a re-check).
        let evidence: Vec<Operation<u64>> = s
            .violations
            .iter_mut()
            .flat_map(|v| std::mem::take(&mut v.ops))
            .collect();
        let mut lin = Linearizability::from_summary(s, recorded, kept, level, init, &name);
        lin.outcomes = outcomes;
        (lin, evidence)
    }
}

/// Violations and undecided keys listed in the report.
const MAX_LISTED: usize = 10;

/// One key's violation, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinViolation {
    /// `bucket/key`.
    pub key: String,
    pub ops: usize,
    /// The longest linearizable prefix, the operation that cannot follow it, and what else was in flight.
    pub explanation: String,
}

/// The linearizability check's figures, as the report carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linearizability {
    /// Keyed operations recorded during the run (preload, load, read-back).
    pub ops_recorded: u64,
    /// Operations checked (all, unless sampled).
    pub ops_checked: u64,
    pub keys_checked: u64,
    /// Set when only a sample of keys was checked: which share, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<String>,
    /// The keys' state before the run: "absent" (a fresh cluster) or "unknown".
    pub initial_state: String,
    pub linearizable: u64,
    pub not_linearizable: u64,
    /// Keys the search budget could not decide.
    pub unknown: u64,
    /// Checked operations by outcome: `ok`, `failed` (dropped: no
    /// effect), `unknown` (may have taken effect any time after the call).
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// The first violations, each explained.
    pub violations: Vec<LinViolation>,
    /// The first undecided keys and why.
    pub undecided: Vec<(String, String)>,
    pub elapsed_ms: u64,
    /// Why the check did not run (then every figure is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Linearizability {
    fn from_summary(
        s: Summary<u64>,
        recorded: u64,
        kept: u64,
        level: u32,
        init: Init,
        name: &impl Fn(u64) -> String,
    ) -> Linearizability {
        let key_name = |k: &str| k.parse().map_or_else(|_| k.to_owned(), name);
        Linearizability {
            ops_recorded: recorded,
            ops_checked: kept,
            keys_checked: s.keys,
            sampled: (level > 0).then(|| {
                format!(
                    "{recorded} operations recorded, over the limit of [history] max_ops: \
                     checked the keys whose hash falls in 1/{} of the key space",
                    1u64 << level
                )
            }),
            initial_state: match init {
                Init::Absent => "absent".to_owned(),
                Init::Value(v) => format!("v{v}"),
                Init::Unknown => "unknown".to_owned(),
            },
            linearizable: s.linearizable,
            not_linearizable: s.not_linearizable,
            unknown: s.unknown,
            violations: s
                .violations
                .into_iter()
                .map(|v| LinViolation {
                    key: key_name(&v.key),
                    ops: v.ops.len(),
                    explanation: v.explanation.text,
                })
                .collect(),
            undecided: s
                .undecided
                .into_iter()
                .map(|u| (key_name(&u.key), u.reason))
                .collect(),
            elapsed_ms: s.elapsed_ms,
            outcomes: BTreeMap::new(),
            skipped: None,
        }
    }

    /// The check could not run, for `why`.
    pub fn skipped(why: impl Into<String>) -> Linearizability {
        Linearizability {
            skipped: Some(why.into()),
            ..Linearizability::default()
        }
    }

    /// Every checked key is linearizable (and the check ran).
    pub fn passed(&self) -> bool {
        self.skipped.is_none() && self.not_linearizable == 0 && self.unknown == 0
    }

    /// One line: `2000 keys, 51234 ops: 2000 linearizable, 0 not, 0 unknown`.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("not checked: {why}");
        }
        let mut s = format!(
            "{} keys, {} ops: {} linearizable, {} not, {} unknown (initial state {}, {} ms)",
            self.keys_checked,
            self.ops_checked,
            self.linearizable,
            self.not_linearizable,
            self.unknown,
            self.initial_state,
            self.elapsed_ms
        );
        if self.sampled.is_some() {
            s.push_str("; a sample of keys");
        }
        s
    }
}

/// Operations by outcome (label → count).
fn outcome_counts(ops: &[Operation<u64>]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for o in ops {
        let k = match o.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        *m.entry(k.to_owned()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn resp(status: u16) -> Result<Resp, HttpError> {
        Ok(Resp {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }

    fn err(e: HttpError) -> Result<Resp, HttpError> {
        Err(e)
    }

    #[test]
    fn values_carry_their_write_identity() {
        let c = ValueCodec::new(77);
        let v = c.value(12, 256);
        assert_eq!(v.len(), 256);
        assert!(v[16..].iter().all(|&b| b == b'v'));
        assert_eq!(c.identity(&v, Some("\"1-5-0\"")), 12);
        // Another run's value (or a short one): foreign, named by its etag.
        let other = ValueCodec::new(78);
        let a = other.identity(&v, Some("\"1-5-0\""));
        assert_ne!(a & FOREIGN_BIT, 0);
        assert_eq!(a, other.identity(b"anything", Some("1-5-0")));
        assert_ne!(a, other.identity(&v, Some("\"1-6-0\"")));
        assert_eq!(c.value(3, 10).as_ref(), b"vvvvvvvvvv");
        assert_ne!(c.identity(b"vvvvvvvvvv", None) & FOREIGN_BIT, 0);
    }

    #[test]
    fn answers_map_to_outcomes_by_what_they_prove() {
        use Outcome::{Failed, Ok as Done, Unknown};
        let get = Input::Get;
        let put = Input::Put {
            value: 1,
            precondition: Precondition::None,
        };
        let insert = Input::Put {
            value: 1,
            precondition: Precondition::IfAbsent,
        };
        assert_eq!(
            outcome_of(&get, &resp(200), 9),
            Done(Output::Value(Some(9)))
        );
        assert_eq!(outcome_of(&get, &resp(404), 9), Done(Output::Value(None)));
        assert_eq!(outcome_of(&put, &resp(201), 0), Done(Output::Stored));
        assert_eq!(
            outcome_of(&insert, &resp(412), 0),
            Done(Output::PreconditionFailed)
        );
        for s in [400, 401, 403, 404, 408, 412, 413, 429, 503] {
            assert_eq!(outcome_of(&put, &resp(s), 0), Failed, "{s}");
        }
        for s in [500, 502, 504, 302] {
            assert_eq!(outcome_of(&put, &resp(s), 0), Unknown, "{s}");
        }
        let m = http::Method::PUT;
        let connect = HttpError::Connect {
            method: m.clone(),
            url: "u".into(),
            message: "refused".into(),
        };
        assert_eq!(outcome_of(&put, &err(connect), 0), Failed);
        let timeout = HttpError::Timeout {
            method: m.clone(),
            url: "u".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(outcome_of(&put, &err(timeout), 0), Unknown);
        let reset = HttpError::Transport {
            method: m,
            url: "u".into(),
            message: "reset".into(),
        };
        assert_eq!(outcome_of(&put, &err(reset), 0), Unknown);
    }

    fn op(key: u64, call: u64, ret: u64, input: Input, out: Output) -> Operation<u64> {
        Operation {
            key,
            client: 0,
            call,
            ret,
            input,
            outcome: Outcome::Ok(out),
        }
    }

    #[test]
    fn a_history_over_its_limit_keeps_a_deterministic_sample_of_keys() {
        let mut h = History::new(1000, Instant::now());
        for i in 0..5000u64 {
            h.push(op(i % 100, i, i + 1, Input::Get, Output::Value(None)));
        }
        assert!(h.len() <= 1000 && h.len() >= 250, "{}", h.len());
        assert!(h.level >= 3);
        let keys: std::collections::BTreeSet<u64> = h.ops.iter().map(|o| o.key).collect();
        // Whole keys: each kept key has all its 50 operations.
        assert_eq!(h.len(), keys.len() * 50);
        let mut again = History::new(1000, Instant::now());
        for i in 0..5000u64 {
            again.push(op(i % 100, i, i + 1, Input::Get, Output::Value(None)));
        }
        assert_eq!(again.ops, h.ops);
        let (lin, _) = h.check(&HistoryConfig::default(), Init::Absent, |k| format!("k{k}"));
        assert!(lin.passed());
        assert_eq!(lin.ops_recorded, 5000);
        assert!(lin.sampled.as_deref().unwrap().contains("1/8"), "{lin:?}");
    }

    #[test]
    fn a_stale_read_is_reported_with_its_key_and_explanation() {
        let mut h = History::new(100, Instant::now());
        let put = |v| Input::Put {
            value: v,
            precondition: Precondition::None,
        };
        h.push(op(4, 0, 10, put(1), Output::Stored));
        h.push(op(4, 20, 30, put(2), Output::Stored));
        h.push(op(4, 40, 50, Input::Get, Output::Value(Some(1))));
        h.push(op(5, 0, 10, put(3), Output::Stored));
        let (lin, evidence) = h.check(&HistoryConfig::default(), Init::Absent, |k| {
            format!("loadtest/k{k}")
        });
        assert!(!lin.passed());
        assert_eq!((lin.linearizable, lin.not_linearizable), (1, 1));
        assert_eq!(lin.violations[0].key, "loadtest/k4");
        assert!(lin.violations[0].explanation.contains("get -> v1"));
        // The evidence: the violating key's whole history.
        assert_eq!(evidence.len(), 3);
        assert!(evidence.iter().all(|o| o.key == 4));
        assert!(lin
            .summary()
            .starts_with("2 keys, 4 ops: 1 linearizable, 1 not"));
        assert_eq!(lin.outcomes["ok"], 4);
    }
}
