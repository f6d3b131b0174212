//! Measurements of a run: latency HdrHistograms and outcome counts keyed by
//! (cell, op, second), their merge, per-second series and per-phase tables,
//! and the open-loop schedule that keeps latency honest (no coordinated
//! omission). Judging isolation from these numbers is `analysis`'.
//!
//! ```text
//! Sample{cell, op, key, start, end, outcome}
//!   └─ record ─▶ Recorder[(cell, op, start second)] = { hist all, hist failed, hist fast-fail,
//!                                                       outcome → (count, first end) }
//!                + per start second: key ids touched / failed
//!   └─ aggregate(filter) ─▶ Aggregate ─▶ Summary (throughput, availability, p50/p99/p999)
//! ```
//!
//! A sample belongs to the second of its *start*, the intended send time in
//! open loop: a request scheduled during a fault counts in the fault's phase
//! however late it completes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use common::CellId;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::workload::OpType;

/// Latencies are recorded in microseconds.
pub const HIST_LOW_US: u64 = 1;
/// Longest latency kept; longer ones are recorded as this (60 s).
pub const HIST_HIGH_US: u64 = 60_000_000;
/// 3 significant figures: 0.1% resolution at every magnitude.
pub const HIST_SIGFIG: u8 = 3;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("open-loop rate must be a finite number > 0 per second, got {0}")]
    Rate(f64),
}

/// A histogram with our bounds. It resizes itself up to the largest value
/// recorded (we clamp at 60 s) instead of allocating the whole 1 µs..60 s
/// range: a (cell, op, second) whose latencies stay under 50 ms costs ≈ 57 KB
/// rather than ≈ 140 KB, which matters with thousands of entries.
fn new_hist() -> Histogram<u64> {
    Histogram::new(HIST_SIGFIG).expect("3 significant figures is a valid histogram precision")
}

fn record_us(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(HIST_LOW_US, HIST_HIGH_US);
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn add_hist(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .expect("an auto-resizing histogram takes any value of another");
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

// ---------------------------------------------------------------------------
// Outcomes and samples

/// How one request ended, as the driver classified it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other status, with the body's `error.code` (`"unknown"` if none).
    Error { status: u16, code: String },
    /// The client's deadline passed; a write's outcome is unknown.
    Timeout,
    /// No connection could be made (e.g. the router is down); nothing was sent.
    Connect,
    /// The connection broke after it was made.
    Transport,
}

/// The code of the router's fast refusal: nothing executed, `Retry-After` given.
pub const FAST_FAIL_CODE: &str = "cell_unavailable";
const FAST_FAIL_STATUS: u16 = 503;

impl Outcome {
    /// The outcome of an HTTP answer with `status` and body error `code`.
    pub fn from_status(status: u16, code: Option<&str>) -> Outcome {
        if (200..300).contains(&status) {
            Outcome::Ok
        } else {
            Outcome::Error {
                status,
                code: code.unwrap_or("unknown").to_owned(),
            }
        }
    }

    /// Counts against availability: a 5xx or no answer at all. A 4xx (a 404
    /// on a read, a 412 lost `If-Match` race, a 429) is a correct answer.
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Ok => false,
            Outcome::Error { status, .. } => *status >= 500,
            Outcome::Timeout | Outcome::Connect | Outcome::Transport => true,
        }
    }

    /// The router refused at once: 503 `cell_unavailable`. (A 502 with that
    /// code means the connection broke after the write was sent: not fast.)
    pub fn is_fast_fail(&self) -> bool {
        matches!(self, Outcome::Error { status, code } if *status == FAST_FAIL_STATUS && code == FAST_FAIL_CODE)
    }

    /// A short bounded label: `ok`, `503 cell_unavailable`, `timeout`, ...
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Error { status, code } => format!("{status} {code}"),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Connect => "connect".to_owned(),
            Outcome::Transport => "transport".to_owned(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// One finished request. Times are offsets from the run's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// From `X-Cellkv-Cell`, or the ring; `None` for listings (every cell)
    /// and requests whose cell is unknown.
    pub cell: Option<CellId>,
    pub op: OpType,
    /// The workload's key id, to count distinct keys that saw errors.
    pub key: Option<u64>,
    /// Open loop: the *intended* send time ([`OpenLoopSchedule::intended`]);
    /// closed loop: the actual send time.
    pub start: Duration,
    /// When the answer (or the error) arrived.
    pub end: Duration,
    pub outcome: Outcome,
}

impl Sample {
    /// `end - start`: from the intended send time in open loop, so the time a
    /// request waited behind a stall is part of its latency.
    pub fn latency(&self) -> Duration {
        latency(self.start, self.end)
    }

    /// The second the sample belongs to.
    pub fn second(&self) -> u32 {
        u32::try_from(self.start.as_secs()).unwrap_or(u32::MAX)
    }
}

/// Latency measured from `intended` (not the actual send) to `completed`.
pub fn latency(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

// ---------------------------------------------------------------------------
// Open loop

/// A fixed request rate: request `i` is due at `i / rate` after the start,
/// whether or not earlier requests have finished or the sender fell behind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenLoopSchedule {
    rate: f64,
}

impl OpenLoopSchedule {
    pub fn new(rate_per_s: f64) -> Result<OpenLoopSchedule, StatsError> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            return Err(StatsError::Rate(rate_per_s));
        }
        Ok(OpenLoopSchedule { rate: rate_per_s })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The intended send time of request `i`, from the start.
    pub fn intended(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The same as an instant, for a run that started at `start`.
    pub fn intended_at(&self, start: Instant, i: u64) -> Instant {
        start + self.intended(i)
    }

    /// How many requests (`0..n`) are due once `elapsed` has passed.
    pub fn due(&self, elapsed: Duration) -> u64 {
        let n = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        // Guard the float rounding at exact boundaries.
        if n > 0 && self.intended(n - 1) > elapsed {
            n - 1
        } else {
            n
        }
    }
}

// ---------------------------------------------------------------------------
// The recorder

/// Where a request went, for grouping: one cell, no single cell (listings,
/// unknown), or everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Cell(CellId),
    NoCell,
    All,
}

impl Scope {
    pub fn matches(self, cell: Option<CellId>) -> bool {
        match self {
            Scope::Cell(c) => cell == Some(c),
            Scope::NoCell => cell.is_none(),
            Scope::All => true,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cell(c) => write!(f, "cell {c}"),
            Scope::NoCell => f.write_str("no cell"),
            Scope::All => f.write_str("all"),
        }
    }
}

/// The key of one recorder entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub cell: Option<CellId>,
    pub op: OpType,
    pub second: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tally {
    count: u64,
    /// The earliest `end` among these samples: first-event times (detection)
    /// at finer than one second.
    first_end: Duration,
}

#[derive(Clone, Debug)]
struct Entry {
    all: Histogram<u64>,
    /// Only failures (`Outcome::is_failure`); created on the first one.
    failed: Option<Histogram<u64>>,
    /// Only fast fails (`Outcome::is_fast_fail`); created on the first one.
    fast_fail: Option<Histogram<u64>>,
    outcomes: BTreeMap<Outcome, Tally>,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            all: new_hist(),
            failed: None,
            fast_fail: None,
            outcomes: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &Entry) {
        add_hist(&mut self.all, &other.all);
        for (mine, theirs) in [
            (&mut self.failed, &other.failed),
            (&mut self.fast_fail, &other.fast_fail),
        ] {
            if let Some(t) = theirs {
                add_hist(mine.get_or_insert_with(new_hist), t);
            }
        }
        for (o, t) in &other.outcomes {
            let e = self.outcomes.entry(o.clone()).or_insert(Tally {
                count: 0,
                first_end: t.first_end,
            });
            e.count += t.count;
            e.first_end = e.first_end.min(t.first_end);
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SecondKeys {
    touched: HashSet<u64>,
    failed: HashSet<u64>,
}

/// Everything measured in a run (or by one client: merge them).
#[derive(Clone, Debug)]
pub struct Recorder {
    entries: BTreeMap<EntryKey, Entry>,
    /// Key ids per start second. Costs ≈ 16 B per distinct (second, key);
    /// turn off with [`Recorder::without_keys`] for very long or fast runs.
    keys: BTreeMap<u32, SecondKeys>,
    track_keys: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            entries: BTreeMap::new(),
            keys: BTreeMap::new(),
            track_keys: true,
        }
    }

    /// A recorder that ignores `Sample::key` (no error key share).
    pub fn without_keys() -> Recorder {
        Recorder {
            track_keys: false,
            ..Recorder::new()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn record(&mut self, s: &Sample) {
        let second = s.second();
        let key = EntryKey {
            cell: s.cell,
            op: s.op,
            second,
        };
        let e = self.entries.entry(key).or_insert_with(Entry::new);
        let lat = s.latency();
        record_us(&mut e.all, lat);
        let failure = s.outcome.is_failure();
        if failure {
            record_us(e.failed.get_or_insert_with(new_hist), lat);
        }
        if s.outcome.is_fast_fail() {
            record_us(e.fast_fail.get_or_insert_with(new_hist), lat);
        }
        let t = e.outcomes.entry(s.outcome.clone()).or_insert(Tally {
            count: 0,
            first_end: s.end,
        });
        t.count += 1;
        t.first_end = t.first_end.min(s.end);
        if let (true, Some(k)) = (self.track_keys, s.key) {
            let sk = self.keys.entry(second).or_default();
            sk.touched.insert(k);
            if failure {
                sk.failed.insert(k);
            }
        }
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Recorder) {
        for (k, e) in &other.entries {
            match self.entries.get_mut(k) {
                Some(mine) => mine.merge(e),
                None => {
                    self.entries.insert(*k, e.clone());
                }
            }
        }
        for (s, k) in &other.keys {
            let mine = self.keys.entry(*s).or_default();
            mine.touched.extend(&k.touched);
            mine.failed.extend(&k.failed);
        }
    }

    /// Every cell that has samples.
    pub fn cells(&self) -> BTreeSet<CellId> {
        self.entries.keys().filter_map(|k| k.cell).collect()
    }

    /// The scopes with samples: each cell, `NoCell` if any, then `All`.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut out: Vec<Scope> = self.cells().into_iter().map(Scope::Cell).collect();
        if self.entries.keys().any(|k| k.cell.is_none()) {
            out.push(Scope::NoCell);
        }
        out.push(Scope::All);
        out
    }

    /// One past the last second with samples (0 when empty).
    pub fn end_second(&self) -> u32 {
        self.entries
            .keys()
            .map(|k| k.second.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    /// Everything recorded under the entries `filter` accepts.
    pub fn aggregate(&self, filter: impl Fn(&EntryKey) -> bool) -> Aggregate {
        let mut a = Aggregate::new();
        for (k, e) in &self.entries {
            if filter(k) {
                a.add(e);
            }
        }
        a
    }

    /// `scope`'s samples that started in `[start_s, end_s)`.
    pub fn window(&self, scope: Scope, start_s: u32, end_s: u32) -> Aggregate {
        self.aggregate(|k| scope.matches(k.cell) && k.second >= start_s && k.second < end_s)
    }

    /// `scope`'s figures for each second `0..end_s` (empty seconds included).
    pub fn series(&self, scope: Scope, end_s: u32) -> Vec<SecondStats> {
        let mut per: BTreeMap<u32, Aggregate> = BTreeMap::new();
        for (k, e) in &self.entries {
            if k.second < end_s && scope.matches(k.cell) {
                per.entry(k.second).or_insert_with(Aggregate::new).add(e);
            }
        }
        let empty = Aggregate::new();
        (0..end_s)
            .map(|s| SecondStats::of(s, per.get(&s).unwrap_or(&empty)))
            .collect()
    }

    /// One row per phase and scope (every scope with samples anywhere, so a
    /// cell that got nothing in a phase shows as 0 requests there).
    pub fn phase_split(&self, phases: &[Phase]) -> Vec<PhaseRow> {
        let scopes = self.scopes();
        let mut rows = Vec::with_capacity(phases.len() * scopes.len());
        for p in phases {
            for &scope in &scopes {
                let a = self.window(scope, p.start_s, p.end_s);
                rows.push(PhaseRow {
                    phase: p.name.clone(),
                    scope,
                    summary: a.summary(f64::from(p.duration_s())),
                });
            }
        }
        rows
    }

    /// Distinct keys touched and keys that saw a failure, among samples that
    /// started in `[start_s, end_s)` (all cells; listings carry no key).
    pub fn key_share(&self, start_s: u32, end_s: u32) -> KeyShare {
        let mut touched: HashSet<u64> = HashSet::new();
        let mut failed: HashSet<u64> = HashSet::new();
        for (_, k) in self.keys.range(start_s..end_s.max(start_s)) {
            touched.extend(&k.touched);
            failed.extend(&k.failed);
        }
        KeyShare {
            touched: touched.len() as u64,
            failed: failed.len() as u64,
        }
    }
}

/// Counts of distinct keys, see [`Recorder::key_share`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    pub touched: u64,
    pub failed: u64,
}

impl KeyShare {
    /// `failed / touched`, `None` when nothing was touched.
    pub fn share(&self) -> Option<f64> {
        (self.touched > 0).then(|| self.failed as f64 / self.touched as f64)
    }
}

// ---------------------------------------------------------------------------
// Aggregates

/// The merge of some entries.
#[derive(Clone, Debug)]
pub struct Aggregate {
    pub all: Histogram<u64>,
    pub failed: Histogram<u64>,
    pub fast_fail: Histogram<u64>,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Per outcome, the earliest completion (offset from the run's start).
    pub first_end: BTreeMap<Outcome, Duration>,
}

impl Aggregate {
    fn new() -> Aggregate {
        Aggregate {
            all: new_hist(),
            failed: new_hist(),
            fast_fail: new_hist(),
            outcomes: BTreeMap::new(),
            first_end: BTreeMap::new(),
        }
    }

    fn add(&mut self, e: &Entry) {
        add_hist(&mut self.all, &e.all);
        if let Some(h) = &e.failed {
            add_hist(&mut self.failed, h);
        }
        if let Some(h) = &e.fast_fail {
            add_hist(&mut self.fast_fail, h);
        }
        for (o, t) in &e.outcomes {
            *self.outcomes.entry(o.clone()).or_default() += t.count;
            let f = self.first_end.entry(o.clone()).or_insert(t.first_end);
            *f = (*f).min(t.first_end);
        }
    }

    pub fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.outcomes.get(&Outcome::Ok).copied().unwrap_or(0)
    }

    pub fn failures(&self) -> u64 {
        self.count_where(Outcome::is_failure)
    }

    pub fn fast_fails(&self) -> u64 {
        self.count_where(Outcome::is_fast_fail)
    }

    fn count_where(&self, f: impl Fn(&Outcome) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| f(o))
            .map(|(_, c)| c)
            .sum()
    }

    /// `1 - failures / requests`; `None` without requests.
    pub fn availability(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0).then(|| 1.0 - self.failures() as f64 / n as f64)
    }

    /// Latency quantile of every request, in ms.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.all, q)
    }

    /// Latency quantile of the failed requests, in ms.
    pub fn failed_quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.failed, q)
    }

    /// Latency quantile of the fast fails (503 `cell_unavailable`), in ms.
    pub fn fast_fail_quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.fast_fail, q)
    }

    /// The earliest completion of a fast fail at or after `after`. Precise
    /// to the sample unless an earlier fast fail started in the same second.
    pub fn first_fast_fail_after(&self, after: Duration) -> Option<Duration> {
        self.first_end
            .iter()
            .filter(|(o, t)| o.is_fast_fail() && **t >= after)
            .map(|(_, t)| *t)
            .min()
    }

    /// The figures of this aggregate over a window of `seconds`.
    pub fn summary(&self, seconds: f64) -> Summary {
        let requests = self.requests();
        Summary {
            requests,
            ok: self.ok(),
            failures: self.failures(),
            fast_fails: self.fast_fails(),
            availability: self.availability(),
            throughput_rps: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            p50_ms: self.quantile_ms(0.50),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: (!self.all.is_empty()).then(|| self.all.max() as f64 / 1000.0),
            outcomes: self.outcomes.iter().map(|(o, c)| (o.label(), *c)).collect(),
        }
    }
}

/// A named time window of the run, `[start_s, end_s)` from the run's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub start_s: u32,
    pub end_s: u32,
}

impl Phase {
    pub fn new(name: impl Into<String>, start_s: u32, end_s: u32) -> Phase {
        Phase {
            name: name.into(),
            start_s,
            end_s,
        }
    }

    pub fn duration_s(&self) -> u32 {
        self.end_s.saturating_sub(self.start_s)
    }
}

/// Figures of a set of requests (JSON in the report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub failures: u64,
    pub fast_fails: u64,
    pub availability: Option<f64>,
    pub throughput_rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Count per outcome label (`ok`, `503 cell_unavailable`, `timeout`, ...).
    pub outcomes: BTreeMap<String, u64>,
}

/// One row of the per-phase table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRow {
    pub phase: String,
    pub scope: Scope,
    pub summary: Summary,
}

/// One second of a timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    pub second: u32,
    pub requests: u64,
    pub ok: u64,
    pub failures: u64,
    pub fast_fails: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl SecondStats {
    fn of(second: u32, a: &Aggregate) -> SecondStats {
        SecondStats {
            second,
            requests: a.requests(),
            ok: a.ok(),
            failures: a.failures(),
            fast_fails: a.fast_fails(),
            p50_ms: a.quantile_ms(0.5),
            p99_ms: a.quantile_ms(0.99),
            max_ms: (!a.all.is_empty()).then(|| a.all.max() as f64 / 1000.0),
        }
    }

    /// `1 - failures / requests`; `None` without requests.
    pub fn availability(&self) -> Option<f64> {
        (self.requests > 0).then(|| 1.0 - self.failures as f64 / self.requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(cell: u32, start: Duration, lat: Duration, outcome: Outcome) -> Sample {
        Sample {
            cell: Some(CellId(cell)),
            op: OpType::Read,
            key: None,
            start,
            end: start + lat,
            outcome,
        }
    }

    fn fast_fail() -> Outcome {
        Outcome::from_status(503, Some("cell_unavailable"))
    }

    fn close(a: Option<f64>, b: f64, rel: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= b.abs() * rel)
    }

    #[test]
    fn outcome_classes() {
        assert_eq!(Outcome::from_status(204, None), Outcome::Ok);
        assert!(fast_fail().is_fast_fail() && fast_fail().is_failure());
        let unknown_outcome = Outcome::from_status(502, Some("cell_unavailable"));
        assert!(unknown_outcome.is_failure() && !unknown_outcome.is_fast_fail());
        assert!(!Outcome::from_status(404, Some("not_found")).is_failure());
        assert!(!Outcome::from_status(412, Some("precondition_failed")).is_failure());
        assert!(Outcome::Timeout.is_failure() && Outcome::Connect.is_failure());
        assert_eq!(Outcome::from_status(500, None).label(), "500 unknown");
        assert_eq!(fast_fail().label(), "503 cell_unavailable");
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 ms, once each: p50 = 500, p99 = 990, p99.9 = 999, max 1000.
        let mut r = Recorder::new();
        for i in 1..=1000u64 {
            r.record(&sample(1, Duration::ZERO, ms(i), Outcome::Ok));
        }
        let s = r.window(Scope::All, 0, 1).summary(1.0);
        assert_eq!(s.requests, 1000);
        assert_eq!(s.throughput_rps, 1000.0);
        assert_eq!(s.availability, Some(1.0));
        // 3 significant figures: within 0.1%.
        assert!(close(s.p50_ms, 500.0, 0.001), "{:?}", s.p50_ms);
        assert!(close(s.p99_ms, 990.0, 0.001), "{:?}", s.p99_ms);
        assert!(close(s.p999_ms, 999.0, 0.001), "{:?}", s.p999_ms);
        assert!(close(s.max_ms, 1000.0, 0.001), "{:?}", s.max_ms);
        // Sub-millisecond and over-range values clamp to 1 µs..60 s.
        let mut r = Recorder::new();
        r.record(&sample(1, Duration::ZERO, Duration::ZERO, Outcome::Ok));
        r.record(&sample(
            1,
            Duration::ZERO,
            Duration::from_secs(600),
            Outcome::Ok,
        ));
        let a = r.window(Scope::All, 0, 1);
        assert!(close(a.quantile_ms(0.0), 0.001, 0.001));
        assert!(close(a.quantile_ms(1.0), 60_000.0, 0.001));
    }

    /// Cell 1: 100 req/s of 1 ms for 10 s. Cell 2: 50 req/s of 10 ms, except
    /// in seconds 5..10 where its requests are refused in 0.5 ms.
    fn two_cell_trace() -> Recorder {
        let mut r = Recorder::new();
        for s in 0..10u64 {
            for i in 0..100u64 {
                let t = Duration::from_secs(s) + ms(i * 10);
                r.record(&Sample {
                    key: Some(i),
                    ..sample(1, t, MS, Outcome::Ok)
                });
            }
            for i in 0..50u64 {
                let t = Duration::from_secs(s) + ms(i * 20);
                let smp = if s < 5 {
                    sample(2, t, 10 * MS, Outcome::Ok)
                } else {
                    sample(2, t, MS / 2, fast_fail())
                };
                r.record(&Sample {
                    key: Some(1000 + i),
                    ..smp
                });
            }
        }
        r
    }

    #[test]
    fn phase_split_aggregates_per_cell_per_phase() {
        let r = two_cell_trace();
        let phases = [Phase::new("steady", 0, 5), Phase::new("fault", 5, 10)];
        let rows = r.phase_split(&phases);
        // 2 phases × (cell 1, cell 2, all).
        assert_eq!(rows.len(), 6);
        let row = |p: &str, s: Scope| {
            rows.iter()
                .find(|r| r.phase == p && r.scope == s)
                .map(|r| r.summary.clone())
                .unwrap()
        };
        let c1 = row("fault", Scope::Cell(CellId(1)));
        assert_eq!((c1.requests, c1.failures), (500, 0));
        assert_eq!(c1.throughput_rps, 100.0);
        assert!(close(c1.p99_ms, 1.0, 0.001));
        let c2s = row("steady", Scope::Cell(CellId(2)));
        assert_eq!((c2s.requests, c2s.ok, c2s.throughput_rps), (250, 250, 50.0));
        assert!(close(c2s.p50_ms, 10.0, 0.001));
        let c2f = row("fault", Scope::Cell(CellId(2)));
        assert_eq!((c2f.failures, c2f.fast_fails), (250, 250));
        assert_eq!(c2f.availability, Some(0.0));
        assert!(close(c2f.p99_ms, 0.5, 0.001));
        assert_eq!(c2f.outcomes.get("503 cell_unavailable"), Some(&250));
        let all = row("fault", Scope::All);
        assert_eq!(all.requests, 750);
        assert!(close(all.availability, 500.0 / 750.0, 1e-9));
        // The fast-fail histogram holds only the refusals.
        let a = r.window(Scope::Cell(CellId(2)), 0, 10);
        assert!(close(a.fast_fail_quantile_ms(0.99), 0.5, 0.001));
        assert!(close(a.quantile_ms(0.99), 10.0, 0.001));
        assert_eq!(
            a.first_fast_fail_after(Duration::ZERO),
            Some(Duration::from_secs(5) + MS / 2)
        );
    }

    #[test]
    fn per_second_series_and_key_share() {
        let r = two_cell_trace();
        let s = r.series(Scope::Cell(CellId(2)), 12);
        assert_eq!(s.len(), 12);
        assert_eq!((s[4].requests, s[4].failures), (50, 0));
        assert_eq!((s[5].requests, s[5].fast_fails), (50, 50));
        assert_eq!(s[5].availability(), Some(0.0));
        assert_eq!(s[11].requests, 0);
        assert_eq!(s[11].availability(), None);
        assert_eq!(r.end_second(), 10);
        assert_eq!(
            r.scopes(),
            vec![Scope::Cell(CellId(1)), Scope::Cell(CellId(2)), Scope::All]
        );
        // Before the fault no key failed; during it all 50 of cell 2's did,
        // out of 150 touched.
        assert_eq!(
            r.key_share(0, 5),
            KeyShare {
                touched: 150,
                failed: 0
            }
        );
        let k = r.key_share(5, 10);
        assert_eq!((k.touched, k.failed), (150, 50));
        assert!(close(k.share(), 1.0 / 3.0, 1e-9));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let whole = two_cell_trace();
        // The same samples split over two recorders by parity of the second.
        let mut even = Recorder::new();
        let mut odd = Recorder::new();
        for s in 0..10u64 {
            for i in 0..100u64 {
                let t = Duration::from_secs(s) + ms(i * 10);
                let target = if i % 2 == 0 { &mut even } else { &mut odd };
                target.record(&Sample {
                    key: Some(i),
                    ..sample(1, t, MS, Outcome::Ok)
                });
            }
            for i in 0..50u64 {
                let t = Duration::from_secs(s) + ms(i * 20);
                let smp = if s < 5 {
                    sample(2, t, 10 * MS, Outcome::Ok)
                } else {
                    sample(2, t, MS / 2, fast_fail())
                };
                let target = if i % 2 == 0 { &mut odd } else { &mut even };
                target.record(&Sample {
                    key: Some(1000 + i),
                    ..smp
                });
            }
        }
        even.merge(&odd);
        let phases = [Phase::new("a", 0, 3), Phase::new("b", 3, 10)];
        assert_eq!(even.phase_split(&phases), whole.phase_split(&phases));
        assert_eq!(even.series(Scope::All, 10), whole.series(Scope::All, 10));
        assert_eq!(even.key_share(0, 10), whole.key_share(0, 10));
    }

    #[test]
    fn open_loop_schedule_times() {
        let s = OpenLoopSchedule::new(1000.0).unwrap();
        assert_eq!(s.intended(0), Duration::ZERO);
        assert_eq!(s.intended(1), MS);
        assert_eq!(s.intended(2500), Duration::from_millis(2500));
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_micros(999)), 1);
        assert_eq!(s.due(MS), 2);
        assert_eq!(s.due(Duration::from_secs(1)), 1001);
        let third = OpenLoopSchedule::new(3.0).unwrap();
        assert_eq!(third.due(Duration::from_secs(1)), 4);
        let t0 = Instant::now();
        assert_eq!(third.intended_at(t0, 3), t0 + Duration::from_secs(1));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(OpenLoopSchedule::new(bad).is_err());
        }
        assert_eq!(latency(Duration::from_secs(2), MS), Duration::ZERO);
    }

    /// A server that answers in 1 ms, but stalls from 1 s to 2 s: whatever
    /// arrives in the stall is answered at 2 s + 1 ms.
    fn stalling_server(arrival: Duration) -> Duration {
        let (stall_start, stall_end) = (Duration::from_secs(1), Duration::from_secs(2));
        if arrival >= stall_start && arrival < stall_end {
            stall_end + MS
        } else {
            arrival + MS
        }
    }

    fn summary_of(samples: &[(Duration, Duration)]) -> Summary {
        let mut r = Recorder::new();
        for &(start, end) in samples {
            r.record(&Sample {
                cell: Some(CellId(1)),
                op: OpType::Read,
                key: None,
                start,
                end,
                outcome: Outcome::Ok,
            });
        }
        r.window(Scope::All, 0, u32::MAX).summary(3.0)
    }

    #[test]
    fn open_loop_latency_includes_the_stall_closed_loop_hides_it() {
        let horizon = Duration::from_secs(3);
        // Open loop, 1000/s, sent on time (enough concurrency): latency from
        // the intended time. The 1000 requests due in the stall wait 1..1000 ms.
        let sched = OpenLoopSchedule::new(1000.0).unwrap();
        let open: Vec<(Duration, Duration)> = (0..)
            .map(|i| sched.intended(i))
            .take_while(|t| *t < horizon)
            .map(|t| (t, stalling_server(t)))
            .collect();
        // Closed loop, one client: the next request waits for the previous.
        let mut closed = Vec::new();
        let mut t = Duration::ZERO;
        while t < horizon {
            let end = stalling_server(t);
            closed.push((t, end));
            t = end;
        }
        let o = summary_of(&open);
        let c = summary_of(&closed);
        assert_eq!(o.requests, 3000);
        // Closed loop: 1000 requests before the stall, 1 that waited it out,
        // 999 after. One slow sample in 2000 does not reach the p99.
        assert_eq!(c.requests, 2000);
        assert!(o.p99_ms.unwrap() > 950.0, "open p99 {:?}", o.p99_ms);
        assert!(close(o.p50_ms, 1.0, 0.001), "open p50 {:?}", o.p50_ms);
        assert!(c.p99_ms.unwrap() < 1.1, "closed p99 {:?}", c.p99_ms);
        assert!(close(c.max_ms, 1001.0, 0.001), "closed max {:?}", c.max_ms);
        // The same closed-loop trace at 100/s, counted from *intended* times
        // (a late open-loop sender) recovers what the stall cost.
        let sched = OpenLoopSchedule::new(100.0).unwrap();
        let mut late = Vec::new();
        let mut free_at = Duration::ZERO;
        for i in 0..300 {
            let intended = sched.intended(i);
            let sent = intended.max(free_at); // one connection: wait for it
            let end = stalling_server(sent);
            free_at = end;
            late.push(((intended, end), (sent, end)));
        }
        let from_intended = summary_of(&late.iter().map(|x| x.0).collect::<Vec<_>>());
        let from_sent = summary_of(&late.iter().map(|x| x.1).collect::<Vec<_>>());
        assert!(from_intended.p99_ms.unwrap() > 900.0);
        assert!(from_sent.p99_ms.unwrap() < 1.1);
    }
}
