//! The run's report: a serde `Report` (the JSON file), the terminal summary
//! table, a self-contained HTML page (inline CSS and SVG; no script, no
//! external URL) with per-cell timelines of throughput, errors and p99 with
//! the faults shaded and the moves (drains, adds) marked, and the one-line
//! live progress. The numbers come from `stats`, `analysis` and the moves'
//! jobs (`migration`); this module only assembles and renders them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::CellId;
use serde::{Deserialize, Serialize};

use crate::analysis::{analyze, AnalysisResult};
use crate::history::Linearizability;
use crate::ledger::{LostWrite, Verification};
use crate::migration::MoveRecord;
use crate::scenario::{Mode, Scenario, SloResult};
use crate::stats::{Phase, PhaseRow, Recorder, Scope, SecondStats};

mod html;

pub use html::render_html;

/// Lost writes listed in the terminal table (all of them go to JSON and HTML).
const TABLE_LOST_WRITES: usize = 20;
/// Linearizability violations explained in the terminal table (the JSON and
/// HTML have every one the check listed).
const TABLE_VIOLATIONS: usize = 3;

/// One scope's per-second series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub scope: Scope,
    pub seconds: Vec<SecondStats>,
}

/// Everything a run produced, as written to the JSON report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario, token redacted.
    pub scenario: Scenario,
    pub duration_s: u32,
    pub cells: Vec<CellId>,
    pub phases: Vec<Phase>,
    /// Per phase and scope (each cell, listings, all).
    pub rows: Vec<PhaseRow>,
    pub timelines: Vec<Timeline>,
    pub analysis: AnalysisResult,
    pub slo: Vec<SloResult>,
    /// Acknowledged writes read back (0 when the check did not run).
    pub writes_checked: u64,
    pub lost_writes: Vec<LostWrite>,
    /// Keys whose read-back failed, so could not be judged.
    pub writes_unverified: u64,
    /// The moves (drains, adds) run through the control server, with their
    /// jobs' figures.
    #[serde(default)]
    pub moves: Vec<MoveRecord>,
    /// The linearizability check of every key's history (`None`: not run).
    #[serde(default)]
    pub linearizability: Option<Linearizability>,
    /// Every SLO passed: the harness's exit status.
    pub passed: bool,
}

/// The SLO every run with moves gets: each job done within its fault's duration.
pub const MOVES_DONE_SLO: &str = "moves_done";

impl Report {
    /// Assembles the report of a finished run. `shares` are the cells' ring
    /// shares (missing: equal shares); `verification` is the lost-write check,
    /// `None` if it did not run (then the lost-write SLO fails). A move that
    /// finished is judged over the seconds it ran (not its whole
    /// `duration_s`, which is only its deadline), and fails the
    /// [`MOVES_DONE_SLO`] if it did not. `lin` is the linearizability
    /// check, `None` if it did not run (then its SLO, if on, fails).
    pub fn build(
        scenario: &Scenario,
        rec: &Recorder,
        cells: &[CellId],
        shares: BTreeMap<CellId, f64>,
        verification: Option<&Verification>,
        moves: &[MoveRecord],
        lin: Option<&Linearizability>,
    ) -> Report {
        let duration_s = scenario.duration_s().max(rec.end_second());
        let phases = scenario.phases();
        let mut input = scenario.analysis_input(cells, shares);
        for m in moves {
            if let (Some((start, end)), Some(w)) = (m.window_s(), input.faults.get_mut(m.fault)) {
                w.start_s = start;
                w.end_s = end;
            }
        }
        let mut analysis = analyze(rec, &input);
        analysis.lost_writes = verification.map(|v| v.lost.len() as u64);
        let mut slo = scenario.slo.evaluate(&analysis);
        if !moves.is_empty() || scenario.faults.iter().any(|f| f.kind.is_move()) {
            slo.push(moves_slo(scenario, moves));
        }
        slo.extend(scenario.slo.evaluate_linearizability(lin));
        let mut scopes: Vec<Scope> = cells.iter().map(|&c| Scope::Cell(c)).collect();
        for s in rec.scopes() {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        Report {
            scenario: scenario.redacted(),
            duration_s,
            cells: cells.to_vec(),
            rows: rec.phase_split(&phases),
            phases,
            timelines: scopes
                .into_iter()
                .map(|scope| Timeline {
                    scope,
                    seconds: rec.series(scope, duration_s),
                })
                .collect(),
            passed: slo.iter().all(|r| r.pass),
            slo,
            analysis,
            writes_checked: verification.map_or(0, |v| v.checked),
            lost_writes: verification.map(|v| v.lost.clone()).unwrap_or_default(),
            writes_unverified: verification.map_or(0, |v| v.unverified.len() as u64),
            moves: moves.to_vec(),
            linearizability: lin.cloned(),
        }
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

/// Every move the scenario asks for ran and its job is done.
fn moves_slo(scenario: &Scenario, moves: &[MoveRecord]) -> SloResult {
    let asked = scenario.faults.iter().filter(|f| f.kind.is_move()).count();
    let done = moves.iter().filter(|m| m.done).count();
    let failed: Vec<String> = moves
        .iter()
        .filter(|m| !m.done)
        .map(|m| format!("{}: {}", m.label, m.error.as_deref().unwrap_or("not done")))
        .collect();
    let pass = done == asked && failed.is_empty();
    SloResult {
        name: MOVES_DONE_SLO.to_owned(),
        target: format!("= {asked}"),
        actual: Some(done as f64),
        pass,
        note: if failed.is_empty() && pass {
            moves
                .iter()
                .filter_map(|m| {
                    let j = m.job.as_ref()?;
                    Some(format!("{}: {:.1} MB/s", m.label, j.mb_per_s))
                })
                .collect::<Vec<_>>()
                .join("; ")
        } else if failed.is_empty() {
            format!("{} of {asked} moves ran", moves.len())
        } else {
            failed.join("; ")
        },
    }
}

// ---------------------------------------------------------------------------
// Number formatting

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.3}", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// The error outcomes of a row, most frequent first: `503 cell_unavailable:12, timeout:3`.
fn top_errors(outcomes: &BTreeMap<String, u64>, n: usize) -> String {
    let mut errs: Vec<(&String, &u64)> = outcomes.iter().filter(|(k, _)| *k != "ok").collect();
    errs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out: Vec<String> = errs
        .iter()
        .take(n)
        .map(|(k, c)| format!("{k}:{c}"))
        .collect();
    if errs.len() > n {
        out.push(format!("+{} more", errs.len() - n));
    }
    out.join(", ")
}

fn mode_text(m: &Mode) -> String {
    match m {
        Mode::Closed { clients } => format!("closed loop, {clients} clients"),
        Mode::Open {
            rate,
            max_in_flight,
        } => format!("open loop, {rate}/s (max {max_in_flight} in flight)"),
    }
}

fn slo_line(r: &SloResult) -> (String, String) {
    let status = if r.pass { "PASS" } else { "FAIL" };
    (status.to_owned(), num(r.actual))
}

// ---------------------------------------------------------------------------
// Terminal

/// The terminal summary: phases × scopes, isolation per fault, SLOs, lost
/// writes and the verdict. Fixed-width columns, plain ASCII.
pub fn render_table(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.scenario;
    let _ = writeln!(o, "scenario {}: {}", s.name, s.description);
    let _ = writeln!(
        o,
        "seed {}, {}, {} s, cells {}",
        s.seed,
        mode_text(&s.mode),
        r.duration_s,
        r.cells
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<30} {:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  ERRORS",
        "PHASE", "SCOPE", "REQS", "RPS", "AVAIL%", "P50ms", "P99ms", "P999ms"
    );
    for row in &r.rows {
        let m = &row.summary;
        let line = format!(
            "{:<30} {:<8} {:>9} {:>8.1} {:>8} {:>8} {:>8} {:>8}  {}",
            clip(&row.phase, 30),
            row.scope.to_string(),
            m.requests,
            m.throughput_rps,
            pct(m.availability),
            ms(m.p50_ms),
            ms(m.p99_ms),
            ms(m.p999_ms),
            top_errors(&m.outcomes, 2)
        );
        let _ = writeln!(o, "{}", line.trim_end());
    }
    for f in &r.analysis.faults {
        let w = &f.window;
        let _ = writeln!(o);
        let _ = writeln!(o, "ISOLATION {} [{} s, {} s)", w.label, w.start_s, w.end_s);
        for h in &f.healthy {
            let _ = writeln!(
                o,
                "  healthy cell {:<4} avail {:>8}%  p99 {:>7} ms  baseline {:>7} ms  ratio {:>6}",
                h.cell.to_string(),
                pct(h.during.availability),
                ms(h.during.p99_ms),
                ms(h.baseline.p99_ms),
                h.p99_ratio
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
            );
        }
        for c in &f.faulted {
            let _ = writeln!(
                o,
                "  faulted cell {:<4} avail {:>8}%  fast fails {:>7}  fast-fail p99 {:>7} ms  failure p99 {:>7} ms  detect {:>7} ms  recover {}",
                c.cell.to_string(),
                pct(c.during.availability),
                c.fast_fails,
                ms(c.fast_fail_p99_ms),
                ms(c.failure_p99_ms),
                ms(c.time_to_detect_ms),
                c.time_to_recover_s
                    .map_or_else(|| "never".to_owned(), |t| format!("{t} s"))
            );
            if let (Some(added), Some(delay)) = (c.added_p50_ms, w.added_latency_ms) {
                let _ = writeln!(
                    o,
                    "                    slowed by {delay} ms: median {} ms ({added:+.1} ms over baseline), p99 {} ms (baseline {} ms)",
                    ms(c.during.p50_ms),
                    ms(c.during.p99_ms),
                    ms(c.baseline.p99_ms),
                );
            }
        }
        let _ = writeln!(
            o,
            "  keys with errors {} of {} ({}%), bound {:.3}%",
            f.keys.failed,
            f.keys.touched,
            pct(f.error_key_share),
            f.error_key_bound * 100.0
        );
    }
    if !r.moves.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "MOVES (jobs of the control server)");
        for m in &r.moves {
            let _ = writeln!(o, "  {}", m.summary());
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "SLO");
    for sr in &r.slo {
        let (status, actual) = slo_line(sr);
        let _ = writeln!(
            o,
            "  {status:<4}  {:<24} {:>12} {:>12}  {}",
            sr.name, sr.target, actual, sr.note
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "LOST WRITES {} (read back {}, unverified {})",
        r.lost_writes.len(),
        r.writes_checked,
        r.writes_unverified
    );
    for l in r.lost_writes.iter().take(TABLE_LOST_WRITES) {
        let _ = writeln!(
            o,
            "  {:?} {}/{}: acked version {} etag {}, found {}",
            l.kind,
            l.bucket,
            l.key,
            l.acked.version,
            l.acked.etag,
            l.found.as_ref().map_or_else(
                || "nothing".to_owned(),
                |f| format!("version {} etag {}", f.version, f.etag)
            )
        );
    }
    if r.lost_writes.len() > TABLE_LOST_WRITES {
        let _ = writeln!(
            o,
            "  ... {} more in the JSON report",
            r.lost_writes.len() - TABLE_LOST_WRITES
        );
    }
    if let Some(l) = &r.linearizability {
        let _ = writeln!(o);
        let _ = writeln!(o, "LINEARIZABILITY {}", l.summary());
        if let Some(s) = &l.sampled {
            let _ = writeln!(o, "  {s}");
        }
        for v in l.violations.iter().take(TABLE_VIOLATIONS) {
            let _ = writeln!(o, "  key {} ({} operations):", v.key, v.ops);
            for line in v.explanation.lines() {
                let _ = writeln!(o, "    {line}");
            }
        }
        if l.not_linearizable as usize > TABLE_VIOLATIONS {
            let _ = writeln!(
                o,
                "  ... {} more keys not linearizable",
                l.not_linearizable as usize - TABLE_VIOLATIONS
            );
        }
        for (k, why) in &l.undecided {
            let _ = writeln!(o, "  undecided {k}: {why}");
        }
    }
    let missed = r.slo.iter().filter(|s| !s.pass).count();
    let _ = writeln!(o);
    if r.passed {
        let _ = writeln!(o, "RESULT PASS ({} SLOs met)", r.slo.len());
    } else {
        let _ = writeln!(o, "RESULT FAIL ({missed} of {} SLOs missed)", r.slo.len());
    }
    o
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('~');
        c
    }
}

/// The live progress line for the last complete second before `elapsed`:
/// `t=35s  998 req/s  errors 12 (1.20%)  p99 c1 2.10 c2 0.80! c3 2.31 ms`
/// (`!` marks a cell with failures in that second).
pub fn render_progress(elapsed: Duration, rec: &Recorder, cells: &[CellId]) -> String {
    let t = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
    let s = t.saturating_sub(1);
    let all = rec.window(Scope::All, s, s + 1);
    let (n, f) = (all.requests(), all.failures());
    let mut o = format!("t={t}s  {n} req/s  errors {f}");
    if f > 0 {
        let _ = write!(o, " ({:.2}%)", f as f64 * 100.0 / n as f64);
    }
    o.push_str("  p99");
    for &c in cells {
        let a = rec.window(Scope::Cell(c), s, s + 1);
        let mark = if a.failures() > 0 { "!" } else { "" };
        let _ = write!(o, " c{c} {}{mark}", ms(a.quantile_ms(0.99)));
    }
    o.push_str(" ms");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ReadBack, WriteLedger};
    use crate::stats::{Outcome, Sample};
    use crate::workload::OpType;

    /// The kill-cell example run on a synthetic trace: cells 1 and 3 answer in
    /// 2 ms; cell 2 in 3 ms, refused (0.6 ms) during its fault, slow for 2 s after.
    fn synthetic(scenario: &Scenario) -> Recorder {
        let f = &scenario.faults[0];
        let (a, b) = (f.at_s, f.end_s());
        let mut r = Recorder::new();
        for s in 0..scenario.duration_s() {
            for c in 1..=3u32 {
                for i in 0..50u64 {
                    let start = Duration::from_secs(u64::from(s)) + Duration::from_millis(i * 20);
                    let (lat_us, outcome) = match c {
                        2 if (a..b).contains(&s) => {
                            (600, Outcome::from_status(503, Some("cell_unavailable")))
                        }
                        2 if (b..b + 2).contains(&s) => (30_000, Outcome::Ok),
                        2 => (3000, Outcome::Ok),
                        _ => (2000 + i * 10, Outcome::Ok),
                    };
                    r.record(&Sample {
                        cell: Some(CellId(c)),
                        op: if i % 2 == 0 {
                            OpType::Read
                        } else {
                            OpType::Update
                        },
                        key: Some(u64::from(c) * 100 + i),
                        start,
                        end: start + Duration::from_micros(lat_us),
                        outcome,
                    });
                }
            }
            // A listing each second, on no single cell; during the fault it fails.
            let start = Duration::from_secs(u64::from(s));
            r.record(&Sample {
                cell: None,
                op: OpType::Scan,
                key: None,
                start,
                end: start + Duration::from_millis(5),
                outcome: if (a..b).contains(&s) {
                    Outcome::from_status(503, Some("cell_unavailable"))
                } else {
                    Outcome::Ok
                },
            });
        }
        r
    }

    fn cells() -> Vec<CellId> {
        vec![CellId(1), CellId(2), CellId(3)]
    }

    fn must_report(lost: bool) -> Report {
        let scenario =
            Scenario::from_toml(include_str!("../../config/scenarios/kill-cell.toml")).unwrap();
        let rec = synthetic(&scenario);
        let mut ledger = WriteLedger::new();
        ledger.record_ack("loadtest", "k0000000001", 10, "1-10-0");
        ledger.record_ack("loadtest", "k0000000002", 12, "2-12-0");
        let mut v = Verification::default();
        v.push(
            "loadtest",
            "k0000000001",
            ledger.check(
                "loadtest",
                "k0000000001",
                &ReadBack::Found {
                    version: 10,
                    etag: "1-10-0".into(),
                },
            ),
        );
        let second = if lost {
            ReadBack::Missing
        } else {
            ReadBack::Found {
                version: 12,
                etag: "2-12-0".into(),
            }
        };
        v.push(
            "loadtest",
            "k0000000002",
            ledger.check("loadtest", "k0000000002", &second),
        );
        Report::build(
            &scenario,
            &rec,
            &cells(),
            BTreeMap::new(),
            Some(&v),
            &[],
            Some(&clean_history()),
        )
    }

    /// A check of a clean run: every key linearizable.
    fn clean_history() -> Linearizability {
        Linearizability {
            ops_recorded: 1200,
            ops_checked: 1200,
            keys_checked: 300,
            initial_state: "absent".into(),
            linearizable: 300,
            ..Linearizability::default()
        }
    }

    #[test]
    fn report_of_a_clean_kill_cell_run_passes() {
        let r = must_report(false);
        assert_eq!(r.duration_s, 75);
        let failed: Vec<&SloResult> = r.slo.iter().filter(|s| !s.pass).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert!(r.passed);
        assert_eq!((r.writes_checked, r.lost_writes.len()), (2, 0));
        // Timelines: 3 cells, listings, all; each 75 s long.
        let scopes: Vec<Scope> = r.timelines.iter().map(|t| t.scope).collect();
        assert_eq!(
            scopes,
            vec![
                Scope::Cell(CellId(1)),
                Scope::Cell(CellId(2)),
                Scope::Cell(CellId(3)),
                Scope::NoCell,
                Scope::All
            ]
        );
        assert!(r.timelines.iter().all(|t| t.seconds.len() == 75));
        let f = &r.analysis.faults[0];
        assert_eq!(f.faulted[0].time_to_recover_s, Some(2));
        // JSON round trip.
        let json = r.to_json().unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_lost_write_fails_the_run_and_is_listed() {
        let r = must_report(true);
        assert!(!r.passed);
        let table = render_table(&r);
        assert!(table.contains("LOST WRITES 1"), "{table}");
        assert!(
            table.contains("Missing loadtest/k0000000002: acked version 12"),
            "{table}"
        );
        assert!(
            table.contains("RESULT FAIL (1 of 8 SLOs missed)"),
            "{table}"
        );
        assert!(render_html(&r).contains("k0000000002"));
    }

    #[test]
    fn a_history_that_is_not_linearizable_fails_the_run_and_is_explained() {
        let scenario =
            Scenario::from_toml(include_str!("../../config/scenarios/kill-cell.toml")).unwrap();
        let rec = synthetic(&scenario);
        let v = Verification {
            checked: 2,
            kept: 2,
            ..Verification::default()
        };
        let mut lin = clean_history();
        lin.linearizable -= 1;
        lin.not_linearizable = 1;
        lin.violations.push(crate::history::LinViolation {
            key: "loadtest/k0000000007".into(),
            ops: 3,
            explanation: "state after it: v2\ncannot place next: #2 client 3: get -> v1".into(),
        });
        let build = |lin: Option<&Linearizability>| {
            Report::build(
                &scenario,
                &rec,
                &cells(),
                BTreeMap::new(),
                Some(&v),
                &[],
                lin,
            )
        };
        let r = build(Some(&lin));
        assert!(!r.passed);
        let slo = r.slo.iter().find(|s| s.name == "linearizable").unwrap();
        assert!(!slo.pass && slo.actual == Some(1.0), "{slo:?}");
        assert!(
            slo.note.contains("first violation: loadtest/k0000000007"),
            "{slo:?}"
        );
        let t = render_table(&r);
        assert!(
            t.contains("LINEARIZABILITY 300 keys, 1200 ops: 299 linearizable, 1 not, 0 unknown"),
            "{t}"
        );
        assert!(
            t.contains("  key loadtest/k0000000007 (3 operations):\n    state after it: v2"),
            "{t}"
        );
        let html = render_html(&r);
        assert!(html.contains("<h2>Linearizability</h2>"));
        assert!(html.contains("cannot place next: #2 client 3: get -&gt; v1"));
        let back: Report = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(back.linearizability, r.linearizability);
        // Not run: the SLO fails; undecided keys fail it too; off: no SLO.
        assert!(!build(None).passed);
        let mut undecided = clean_history();
        undecided.unknown = 1;
        undecided
            .undecided
            .push(("loadtest/k1".into(), "budget".into()));
        assert!(!build(Some(&undecided)).passed);
        let mut off = scenario.clone();
        off.slo.linearizable = false;
        let r = Report::build(&off, &rec, &cells(), BTreeMap::new(), Some(&v), &[], None);
        assert!(r.passed && r.slo.iter().all(|s| s.name != "linearizable"));
        // Values too small to carry an identity: not applicable.
        let skipped = Linearizability::skipped("values under 16 bytes");
        let r = build(Some(&skipped));
        assert!(r.passed, "{:#?}", r.slo);
    }

    /// The drain example on a synthetic trace: every cell answers in 2 ms;
    /// cell 3 answers nothing once its keys moved (second 40 on).
    fn drain_report(moves: &[MoveRecord]) -> Report {
        let scenario =
            Scenario::from_toml(include_str!("../../config/scenarios/drain-cell.toml")).unwrap();
        let mut rec = Recorder::new();
        for s in 0..scenario.duration_s() {
            for c in 1..=3u32 {
                if c == 3 && s >= 40 {
                    continue;
                }
                for i in 0..50u64 {
                    let start = Duration::from_secs(u64::from(s)) + Duration::from_millis(i * 20);
                    rec.record(&Sample {
                        cell: Some(CellId(c)),
                        op: OpType::Read,
                        key: Some(u64::from(c) * 100 + i),
                        start,
                        end: start + Duration::from_millis(2),
                        outcome: Outcome::Ok,
                    });
                }
            }
        }
        let v = Verification {
            checked: 10,
            kept: 10,
            ..Verification::default()
        };
        Report::build(
            &scenario,
            &rec,
            &cells(),
            BTreeMap::new(),
            Some(&v),
            moves,
            Some(&clean_history()),
        )
    }

    fn drain_move(done: bool) -> MoveRecord {
        let mut m = MoveRecord::new(
            0,
            crate::scenario::FaultKind::DrainCell,
            Some(CellId(3)),
            25.0,
        );
        m.job_started_s = Some(25.1);
        m.ended_s = Some(40.4);
        m.done = done;
        if !done {
            m.error = Some("job j-1 ended Failed: cell 1 refused ingest".into());
        }
        m.job = Some(client::admin::JobFigures {
            job: "j-1".into(),
            kind: "drain".into(),
            status: if done {
                client::admin::JobStatus::Done
            } else {
                client::admin::JobStatus::Failed
            },
            message: None,
            ranges_total: 12,
            ranges_done: 12,
            batches: 2,
            keys_copied: 1000,
            bytes_copied: 64 << 20,
            keys_deleted: 0,
            bytes_estimated: 64 << 20,
            bandwidth_bytes_per_sec: 32 << 20,
            elapsed_s: Some(15.3),
            active_s: 15.0,
            mb_per_s: 4.47,
            keys_per_s: 66.7,
            pause_max_ms: Some(40),
            pause_p99_ms: Some(40),
            pauses: 2,
        });
        m
    }

    #[test]
    fn a_drain_is_judged_on_every_cell_over_the_seconds_it_ran() {
        let r = drain_report(&[drain_move(true)]);
        assert!(r.passed, "{:#?}", r.slo);
        let f = &r.analysis.faults[0];
        // The window is the move's seconds, not the fault's 90 s deadline.
        assert_eq!((f.window.start_s, f.window.end_s), (25, 41));
        assert!(f.faulted.is_empty());
        let healthy: Vec<CellId> = f.healthy.iter().map(|h| h.cell).collect();
        assert_eq!(healthy, cells());
        assert_eq!(f.healthy_availability, Some(1.0));
        let slo = r.slo.iter().find(|s| s.name == MOVES_DONE_SLO).unwrap();
        assert!(slo.pass && slo.note.contains("4.5 MB/s"), "{slo:?}");
        let t = render_table(&r);
        assert!(t.contains("MOVES (jobs of the control server)"), "{t}");
        assert!(
            t.contains("drain_cell cell 3 job j-1 [25.1 s, 40.4 s]: done, 12 ranges, 1000 keys, 64.0 MiB in 15.0 s: 4.5 MB/s"),
            "{t}"
        );
        let html = render_html(&r);
        assert!(html.contains("<h2>Moves</h2>"));
        assert_eq!(
            html.matches("<rect class=\"move\"").count(),
            r.timelines.len()
        );
        assert!(html.contains("drain_cell cell 3 done in 15.4 s, 4.5 MB/s"));
        // The moves travel in the JSON (other floats may differ in the last bit).
        let back: Report = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(back.moves, r.moves);
    }

    #[test]
    fn a_move_that_failed_or_never_ran_fails_the_run() {
        let r = drain_report(&[drain_move(false)]);
        assert!(!r.passed);
        let slo = r.slo.iter().find(|s| s.name == MOVES_DONE_SLO).unwrap();
        assert!(!slo.pass && slo.note.contains("refused ingest"), "{slo:?}");
        // Not finished: the fault keeps its scenario window.
        assert_eq!(r.analysis.faults[0].window.end_s, 115);
        assert!(render_table(&r).contains("FAILED: job j-1 ended Failed"));
        assert!(render_html(&r).contains("drain_cell cell 3 FAILED"));
        let r = drain_report(&[]);
        assert!(!r.passed, "a move the scenario asks for must have run");
    }

    #[test]
    fn terminal_table_has_fixed_columns() {
        let r = must_report(false);
        let t = render_table(&r);
        let header = t.lines().find(|l| l.starts_with("PHASE")).unwrap();
        let reqs_end = header.find("REQS").unwrap() + 4;
        // Every phase row right-aligns its request count under REQS.
        let rows: Vec<&str> = t
            .lines()
            .skip_while(|l| !l.starts_with("PHASE"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(rows.len(), r.rows.len());
        for row in &rows {
            assert!(row.as_bytes()[reqs_end - 1].is_ascii_digit(), "{row}");
            assert_eq!(row.as_bytes().get(reqs_end), Some(&b' '), "{row}");
        }
        assert!(t.contains("ISOLATION kill_cell cell 2 [30 s, 45 s)"));
        assert!(t.contains("faulted cell 2"));
        assert!(t.contains("RESULT PASS (8 SLOs met)"));
        assert!(t.contains("503 cell_unavailable:"));
    }

    #[test]
    fn html_is_self_contained_with_an_svg_per_cell_and_the_faults() {
        let r = must_report(false);
        let html = render_html(&r);
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.ends_with("</body></html>\n"));
        // One SVG per timeline: each cell, listings, all.
        assert_eq!(html.matches("<svg ").count(), r.timelines.len());
        for c in 1..=3 {
            assert!(html.contains(&format!("aria-label=\"timeline of cell {c}\"")));
        }
        // The fault is shaded and labelled on every timeline.
        assert_eq!(
            html.matches("<rect class=\"fault\"").count(),
            r.timelines.len()
        );
        assert!(html.contains(">kill_cell cell 2</text>"));
        assert!(html.contains("faulted: kill_cell cell 2"));
        // Nothing external, nothing executable.
        for banned in [
            "http://", "https://", "<script", "src=", "href=", "url(", "@import",
        ] {
            assert!(!html.contains(banned), "contains {banned}");
        }
        // Balanced SVG and tables.
        assert_eq!(
            html.matches("<svg ").count(),
            html.matches("</svg>").count()
        );
        assert_eq!(
            html.matches("<table>").count(),
            html.matches("</table>").count()
        );
    }

    #[test]
    fn html_escapes_scenario_text() {
        let mut r = must_report(false);
        r.scenario.description = "<b>bold</b> & \"quoted\"".into();
        let html = render_html(&r);
        assert!(html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"));
        assert!(!html.contains("<b>bold"));
    }

    #[test]
    fn progress_line_shows_rate_errors_and_per_cell_p99() {
        let scenario =
            Scenario::from_toml(include_str!("../../config/scenarios/kill-cell.toml")).unwrap();
        let rec = synthetic(&scenario);
        let line = render_progress(Duration::from_millis(35_400), &rec, &cells());
        // Second 34 is in the fault: cell 2's 50 requests and the listing failed.
        assert!(
            line.starts_with("t=35s  151 req/s  errors 51 (33.77%)  p99 c1 "),
            "{line}"
        );
        assert!(line.contains(" c2 0.60! "), "{line}");
        let calm = render_progress(Duration::from_secs(10), &rec, &cells());
        assert!(calm.contains("errors 0  p99"), "{calm}");
        assert!(!calm.contains('!'), "{calm}");
    }

    /// Writes the report of a noisy synthetic kill-cell run to the temp dir,
    /// to look at: `cargo test --release -p cellkv-loadtest --lib -- --ignored sample`.
    #[test]
    #[ignore = "writes a file to look at"]
    fn sample_html_to_tmp() {
        use crate::workload::Rng;
        let scenario =
            Scenario::from_toml(include_str!("../../config/scenarios/kill-cell.toml")).unwrap();
        let (a, b) = (30, 45);
        let mut rng = Rng::seed_from(1);
        let mut rec = Recorder::new();
        for s in 0..scenario.duration_s() {
            for c in 1..=3u32 {
                let n = 300 + rng.below(40);
                for i in 0..n {
                    let start = Duration::from_secs(u64::from(s))
                        + Duration::from_micros(i * 1_000_000 / n);
                    // Log-uniform 1..8 ms, a rare 40 ms outlier.
                    let mut lat = 1000.0 * 8f64.powf(rng.next_f64());
                    if rng.below(500) == 0 {
                        lat = 40_000.0;
                    }
                    let outcome = match c {
                        2 if s == a => {
                            // Detection: the first 400 ms of the fault time out.
                            if i * 1000 / n < 400 {
                                lat = 1_000_000.0;
                                Outcome::Timeout
                            } else {
                                lat = 400.0 + 200.0 * rng.next_f64();
                                Outcome::from_status(503, Some("cell_unavailable"))
                            }
                        }
                        2 if (a..b).contains(&s) => {
                            lat = 400.0 + 200.0 * rng.next_f64();
                            Outcome::from_status(503, Some("cell_unavailable"))
                        }
                        2 if (b..b + 3).contains(&s) => {
                            lat *= 6.0;
                            Outcome::Ok
                        }
                        _ => Outcome::Ok,
                    };
                    rec.record(&Sample {
                        cell: Some(CellId(c)),
                        op: if i % 20 == 0 {
                            OpType::Update
                        } else {
                            OpType::Read
                        },
                        key: Some(u64::from(c) * 10_000 + rng.below(2000)),
                        start,
                        end: start + Duration::from_micros(lat as u64),
                        outcome,
                    });
                }
            }
        }
        let v = Verification {
            checked: 1234,
            kept: 1234,
            ..Verification::default()
        };
        let r = Report::build(
            &scenario,
            &rec,
            &cells(),
            BTreeMap::new(),
            Some(&v),
            &[],
            Some(&clean_history()),
        );
        let dir = std::env::temp_dir();
        std::fs::write(dir.join("cellkv-loadtest-sample.html"), render_html(&r)).unwrap();
        std::fs::write(
            dir.join("cellkv-loadtest-sample.json"),
            r.to_json().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("cellkv-loadtest-sample.txt"), render_table(&r)).unwrap();
    }

    #[test]
    fn number_formats() {
        assert_eq!(ms(Some(1.234)), "1.23");
        assert_eq!(ms(Some(12.34)), "12.3");
        assert_eq!(ms(Some(1234.5)), "1234");
        assert_eq!(ms(None), "-");
        assert_eq!(pct(Some(0.9995)), "99.950");
        let mut o = BTreeMap::new();
        o.insert("ok".to_owned(), 10);
        o.insert("timeout".to_owned(), 2);
        o.insert("503 cell_unavailable".to_owned(), 7);
        o.insert("connect".to_owned(), 1);
        assert_eq!(
            top_errors(&o, 2),
            "503 cell_unavailable:7, timeout:2, +1 more"
        );
    }
}
