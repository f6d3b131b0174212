//! Isolation figures of a run: for each fault window, how the healthy cells
//! fared against their own baseline, how fast and how early the faulted cells'
//! requests failed, when they recovered, and what share of keys saw errors
//! against the ring's bound. Pure arithmetic over a `stats::Recorder`; SLO
//! verdicts are `scenario`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use common::CellId;
use serde::{Deserialize, Serialize};

use crate::stats::{Aggregate, KeyShare, Phase, Recorder, Scope};

/// A time window during which `cells` were faulted, `[start_s, end_s)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// For humans: `"kill_cell cell 2"`.
    pub label: String,
    pub start_s: u32,
    pub end_s: u32,
    /// Cells whose keys may fail; every other cell must not notice. Empty for
    /// faults that should cost no availability (drain, add); every cell for
    /// faults in front of all of them (router restart).
    pub cells: Vec<CellId>,
    /// Whether the router should refuse the faulted cells' requests at once
    /// (503 `cell_unavailable`): the fast-fail SLOs judge only such windows.
    pub expect_fast_fail: bool,
    /// `slow_cell`: the round trip added between the router and the faulted
    /// cells. Their requests must show it (or be refused): proof the fault
    /// really was in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_latency_ms: Option<f64>,
}

/// When a faulted cell counts as recovered: `sustain_s` seconds in a row with
/// at least `availability_min` and a p99 within `p99_ratio_max` × its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryTolerance {
    pub availability_min: f64,
    /// Looser than the healthy-cell SLO: one second's p99 is noisy.
    pub p99_ratio_max: f64,
    pub sustain_s: u32,
}

impl Default for RecoveryTolerance {
    fn default() -> Self {
        RecoveryTolerance {
            availability_min: 0.99,
            p99_ratio_max: 2.0,
            sustain_s: 3,
        }
    }
}

/// What to analyse.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisInput {
    /// The steady phase every cell is compared with.
    pub baseline: Phase,
    pub faults: Vec<FaultWindow>,
    /// Every cell of the cluster.
    pub cells: Vec<CellId>,
    /// Each cell's share of the ring; cells missing here count `1 / cells.len()`.
    pub shares: BTreeMap<CellId, f64>,
    pub recovery: RecoveryTolerance,
    /// One past the last second of the run: recovery is looked for until then.
    pub end_s: u32,
}

/// A cell's figures over one window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellWindow {
    pub requests: u64,
    pub failures: u64,
    pub availability: Option<f64>,
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub p50_ms: Option<f64>,
}

impl CellWindow {
    fn of(a: &Aggregate) -> CellWindow {
        CellWindow {
            requests: a.requests(),
            failures: a.failures(),
            availability: a.availability(),
            p99_ms: a.quantile_ms(0.99),
            p50_ms: a.quantile_ms(0.5),
        }
    }
}

/// A cell that was not faulted, during a fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthyCell {
    pub cell: CellId,
    pub baseline: CellWindow,
    pub during: CellWindow,
    /// `during.p99 / baseline.p99`.
    pub p99_ratio: Option<f64>,
}

/// A faulted cell, during and after its fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultedCell {
    pub cell: CellId,
    pub baseline: CellWindow,
    pub during: CellWindow,
    pub fast_fails: u64,
    /// p99 of the 503 `cell_unavailable` answers: how fast refusals are.
    pub fast_fail_p99_ms: Option<f64>,
    /// p99 of every failure (fast or not: timeouts show here).
    pub failure_p99_ms: Option<f64>,
    /// From the fault's start to the first fast fail of this cell.
    pub time_to_detect_ms: Option<f64>,
    /// From the fault's end to the start of the first recovered streak;
    /// `None`: not recovered by the end of the run.
    pub time_to_recover_s: Option<u32>,
    /// Windows with an added latency (`slow_cell`) only: the median during
    /// the fault minus the baseline median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_p50_ms: Option<f64>,
}

/// Everything about one fault window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultAnalysis {
    pub window: FaultWindow,
    pub healthy: Vec<HealthyCell>,
    pub faulted: Vec<FaultedCell>,
    /// Over all healthy cells' requests together.
    pub healthy_availability: Option<f64>,
    /// The worst healthy cell's p99 ratio.
    pub healthy_p99_ratio: Option<f64>,
    /// Distinct keys touched and failed during the window.
    pub keys: KeyShare,
    pub error_key_share: Option<f64>,
    /// The share of keys the faulted cells own: the most that should fail.
    pub error_key_bound: f64,
}

/// The isolation figures of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisResult {
    pub baseline: Phase,
    pub faults: Vec<FaultAnalysis>,
    /// Acknowledged writes missing or older on read-back; `None`: not checked.
    pub lost_writes: Option<u64>,
}

/// Computes the isolation figures of `rec` (the lost-write count is the
/// ledger's: set `lost_writes` afterwards).
pub fn analyze(rec: &Recorder, input: &AnalysisInput) -> AnalysisResult {
    let b = &input.baseline;
    let baseline: BTreeMap<CellId, Aggregate> = input
        .cells
        .iter()
        .map(|&c| (c, rec.window(Scope::Cell(c), b.start_s, b.end_s)))
        .collect();
    let faults = input
        .faults
        .iter()
        .map(|f| analyze_fault(rec, input, &baseline, f))
        .collect();
    AnalysisResult {
        baseline: input.baseline.clone(),
        faults,
        lost_writes: None,
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

fn analyze_fault(
    rec: &Recorder,
    input: &AnalysisInput,
    baseline: &BTreeMap<CellId, Aggregate>,
    f: &FaultWindow,
) -> FaultAnalysis {
    let empty = CellWindow {
        requests: 0,
        failures: 0,
        availability: None,
        p99_ms: None,
        p50_ms: None,
    };
    let base_of = |c: CellId| baseline.get(&c).map(CellWindow::of).unwrap_or(empty);
    let mut healthy = Vec::new();
    let (mut h_requests, mut h_failures) = (0u64, 0u64);
    let mut faulted = Vec::new();
    for &cell in &input.cells {
        let during_agg = rec.window(Scope::Cell(cell), f.start_s, f.end_s);
        let during = CellWindow::of(&during_agg);
        let base = base_of(cell);
        if f.cells.contains(&cell) {
            let start = Duration::from_secs(u64::from(f.start_s));
            faulted.push(FaultedCell {
                cell,
                baseline: base,
                during,
                fast_fails: during_agg.fast_fails(),
                fast_fail_p99_ms: during_agg.fast_fail_quantile_ms(0.99),
                failure_p99_ms: during_agg.failed_quantile_ms(0.99),
                time_to_detect_ms: during_agg
                    .first_fast_fail_after(start)
                    .map(|t| (t - start).as_secs_f64() * 1000.0),
                time_to_recover_s: time_to_recover(rec, cell, &base, f.end_s, input),
                added_p50_ms: f
                    .added_latency_ms
                    .and(during.p50_ms)
                    .map(|d| d - base.p50_ms.unwrap_or(0.0)),
            });
        } else {
            h_requests += during.requests;
            h_failures += during.failures;
            healthy.push(HealthyCell {
                cell,
                baseline: base,
                during,
                p99_ratio: ratio(during.p99_ms, base.p99_ms),
            });
        }
    }
    let keys = rec.key_share(f.start_s, f.end_s);
    let n = input.cells.len().max(1) as f64;
    let error_key_bound = f
        .cells
        .iter()
        .map(|c| input.shares.get(c).copied().unwrap_or(1.0 / n))
        // A fold from +0.0: an empty `sum` is -0.0, shown as "-0.000%".
        .fold(0.0, |a, b| a + b)
        .min(1.0);
    FaultAnalysis {
        window: f.clone(),
        healthy_availability: (h_requests > 0).then(|| 1.0 - h_failures as f64 / h_requests as f64),
        healthy_p99_ratio: healthy
            .iter()
            .filter_map(|h| h.p99_ratio)
            .max_by(f64::total_cmp),
        healthy,
        faulted,
        keys,
        error_key_share: keys.share(),
        error_key_bound,
    }
}

/// Seconds from `from_s` to the first second that starts `sustain_s` good
/// seconds in a row for `cell`. Good: requests, availability at least the
/// tolerance, p99 within the ratio of the baseline (when it had one).
fn time_to_recover(
    rec: &Recorder,
    cell: CellId,
    base: &CellWindow,
    from_s: u32,
    input: &AnalysisInput,
) -> Option<u32> {
    let tol = &input.recovery;
    let series = rec.series(Scope::Cell(cell), input.end_s);
    let good = |s: u32| {
        let Some(st) = series.get(s as usize) else {
            return false;
        };
        let avail_ok = st.availability().is_some_and(|a| a >= tol.availability_min);
        let p99_ok = match (st.p99_ms, base.p99_ms) {
            (Some(p), Some(b)) => p <= b * tol.p99_ratio_max,
            _ => true,
        };
        avail_ok && p99_ok
    };
    let need = tol.sustain_s.max(1);
    let mut streak = 0;
    for s in from_s..input.end_s {
        if good(s) {
            streak += 1;
            if streak == need {
                return Some(s + 1 - need - from_s);
            }
        } else {
            streak = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Outcome, Sample};
    use crate::workload::OpType;

    const MS: Duration = Duration::from_millis(1);

    /// What each cell does in one second: (requests, latency, outcome).
    type Behaviour = fn(cell: u32, second: u32) -> (u64, Duration, Outcome);

    /// 100 requests per second per cell over `seconds`, each on its own key
    /// (key id = cell * 1000 + i), spread evenly over the second.
    fn trace(cells: u32, seconds: u32, behaviour: Behaviour) -> Recorder {
        let mut r = Recorder::new();
        for s in 0..seconds {
            for c in 1..=cells {
                let (n, lat, outcome) = behaviour(c, s);
                for i in 0..n {
                    let start = Duration::from_secs(u64::from(s))
                        + Duration::from_micros(i * 1_000_000 / n);
                    r.record(&Sample {
                        cell: Some(CellId(c)),
                        op: OpType::Read,
                        key: Some(u64::from(c) * 1000 + i),
                        start,
                        end: start + lat,
                        outcome: outcome.clone(),
                    });
                }
            }
        }
        r
    }

    fn input(faults: Vec<FaultWindow>, end_s: u32) -> AnalysisInput {
        AnalysisInput {
            baseline: Phase::new("steady", 0, 10),
            faults,
            cells: vec![CellId(1), CellId(2), CellId(3)],
            shares: BTreeMap::new(),
            recovery: RecoveryTolerance::default(),
            end_s,
        }
    }

    fn fault(start_s: u32, end_s: u32, cells: &[u32]) -> FaultWindow {
        FaultWindow {
            label: "kill_cell cell 2".into(),
            start_s,
            end_s,
            cells: cells.iter().map(|&c| CellId(c)).collect(),
            expect_fast_fail: true,
            added_latency_ms: None,
        }
    }

    fn unavailable() -> Outcome {
        Outcome::from_status(503, Some("cell_unavailable"))
    }

    /// Cells 1 and 3 answer in 2 ms throughout, except cell 3 at 3 ms during
    /// the fault (10..20). Cell 2 answers in 4 ms; during the fault it is
    /// refused in 1 ms; it comes back slow (20 ms) for 2 s, then normal.
    fn killed_cell_2(cell: u32, s: u32) -> (u64, Duration, Outcome) {
        match (cell, s) {
            (3, 10..20) => (100, 3 * MS, Outcome::Ok),
            (2, 10..20) => (100, MS, unavailable()),
            (2, 20..22) => (100, 20 * MS, Outcome::Ok),
            (2, _) => (100, 4 * MS, Outcome::Ok),
            _ => (100, 2 * MS, Outcome::Ok),
        }
    }

    #[test]
    fn kill_cell_figures_match_the_synthetic_trace() {
        let r = trace(3, 40, killed_cell_2);
        let a = analyze(&r, &input(vec![fault(10, 20, &[2])], 40));
        assert_eq!(a.baseline.name, "steady");
        let f = &a.faults[0];
        // Healthy cells kept every request; cell 3's p99 went 2 → 3 ms.
        assert_eq!(f.healthy.len(), 2);
        assert_eq!(f.healthy_availability, Some(1.0));
        let worst = f.healthy_p99_ratio.unwrap();
        assert!((worst - 1.5).abs() < 0.01, "ratio {worst}");
        let c1 = &f.healthy[0];
        assert_eq!((c1.cell, c1.during.requests), (CellId(1), 1000));
        assert!((c1.p99_ratio.unwrap() - 1.0).abs() < 0.01);
        // The faulted cell: everything refused, fast.
        let c2 = &f.faulted[0];
        assert_eq!(c2.cell, CellId(2));
        assert_eq!((c2.during.requests, c2.fast_fails), (1000, 1000));
        assert_eq!(c2.during.availability, Some(0.0));
        assert!((c2.fast_fail_p99_ms.unwrap() - 1.0).abs() < 0.01);
        assert_eq!(c2.failure_p99_ms, c2.fast_fail_p99_ms);
        // The first refusal was sent at 10.000 s and answered 1 ms later.
        assert!((c2.time_to_detect_ms.unwrap() - 1.0).abs() < 1e-6);
        // 20 ms is 5× its 4 ms baseline: seconds 20, 21 are not recovered; from
        // 22 on they are (3 in a row), so recovery took 2 s.
        assert_eq!(c2.time_to_recover_s, Some(2));
        // 100 of 300 touched keys failed: exactly cell 2's share, the bound.
        assert_eq!(
            f.keys,
            KeyShare {
                touched: 300,
                failed: 100
            }
        );
        assert!((f.error_key_share.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!((f.error_key_bound - 1.0 / 3.0).abs() < 1e-9);
    }

    /// Cell 2 is refused from 10 s to the end: it never recovers.
    fn never_back(cell: u32, s: u32) -> (u64, Duration, Outcome) {
        match (cell, s) {
            (2, 10..) => (100, MS, unavailable()),
            _ => (100, 2 * MS, Outcome::Ok),
        }
    }

    #[test]
    fn a_cell_that_stays_down_never_recovers() {
        let r = trace(3, 30, never_back);
        let a = analyze(&r, &input(vec![fault(10, 20, &[2])], 30));
        assert_eq!(a.faults[0].faulted[0].time_to_recover_s, None);
    }

    /// Healthy cell 1 loses a second's requests and triples its latency
    /// during the fault; the faulted cell only times out (no fast fail).
    fn leaky(cell: u32, s: u32) -> (u64, Duration, Outcome) {
        match (cell, s) {
            (1, 10..20) if s == 15 => (100, 6 * MS, Outcome::Timeout),
            (1, 10..20) => (100, 6 * MS, Outcome::Ok),
            (2, 10..20) => (100, 500 * MS, Outcome::Timeout),
            _ => (100, 2 * MS, Outcome::Ok),
        }
    }

    #[test]
    fn leaks_into_healthy_cells_and_slow_failures_are_visible() {
        let r = trace(3, 30, leaky);
        let a = analyze(&r, &input(vec![fault(10, 20, &[2])], 30));
        let f = &a.faults[0];
        // Cell 1: 100 of 1000 requests (second 15) timed out; cell 3 was fine.
        let avail = f.healthy_availability.unwrap();
        assert!((avail - 1900.0 / 2000.0).abs() < 1e-9, "{avail}");
        assert!((f.healthy_p99_ratio.unwrap() - 3.0).abs() < 0.01);
        let c2 = &f.faulted[0];
        assert_eq!(c2.fast_fails, 0);
        assert_eq!(c2.fast_fail_p99_ms, None);
        assert_eq!(c2.time_to_detect_ms, None);
        assert!((c2.failure_p99_ms.unwrap() - 500.0).abs() < 1.0);
        // Failed keys: cell 2's 100 and cell 1's 100 of second 15, of 300.
        assert_eq!(f.keys.failed, 200);
        assert_eq!(c2.time_to_recover_s, Some(0));
    }

    #[test]
    fn detection_uses_first_event_times_and_shares_come_from_the_ring() {
        // Cell 2 is fine until 12.5 s, then refused.
        let mut r = Recorder::new();
        for ms in 0..20_000u64 {
            let start = Duration::from_millis(ms);
            let outcome = if ms >= 12_500 {
                unavailable()
            } else {
                Outcome::Ok
            };
            r.record(&Sample {
                cell: Some(CellId(2)),
                op: OpType::Update,
                key: Some(ms % 10),
                start,
                end: start + 2 * MS,
                outcome,
            });
        }
        let mut inp = input(vec![fault(10, 20, &[2])], 20);
        inp.shares = [(CellId(1), 0.5), (CellId(2), 0.2), (CellId(3), 0.3)].into();
        let a = analyze(&r, &inp);
        let f = &a.faults[0];
        let ttd = f.faulted[0].time_to_detect_ms.unwrap();
        assert!((ttd - 2502.0).abs() < 1e-6, "{ttd}");
        assert!((f.error_key_bound - 0.2).abs() < 1e-12);
        // No traffic to healthy cells: nothing to judge them by.
        assert_eq!(f.healthy_availability, None);
        assert_eq!(f.healthy_p99_ratio, None);
    }

    #[test]
    fn router_restart_faults_every_cell_and_bounds_at_one() {
        let r = trace(3, 20, |_, s| {
            if s == 10 {
                (100, MS, Outcome::Connect)
            } else {
                (100, 2 * MS, Outcome::Ok)
            }
        });
        let a = analyze(&r, &input(vec![fault(10, 11, &[1, 2, 3])], 20));
        let f = &a.faults[0];
        assert!(f.healthy.is_empty());
        assert_eq!(f.faulted.len(), 3);
        assert_eq!(f.error_key_bound, 1.0);
        assert_eq!(f.error_key_share, Some(1.0));
        assert!(f.faulted.iter().all(|c| c.time_to_recover_s == Some(0)));
    }
}
