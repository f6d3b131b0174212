//! A scenario's `[slo]` and its verdicts on the isolation figures: each SLO
//! reports the worst value over the faults, and where it came from. What
//! does not apply (no healthy cell during a router restart) passes with a note;
//! what was expected but never seen (a recovery, a fast fail) fails.

use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisResult;
use crate::history::Linearizability;

/// The SLO on the linearizability check.
pub const LINEARIZABLE_SLO: &str = "linearizable";

/// `[slo]`: what the run must show. The first four always apply (set a
/// permissive value to waive one); the optional ones apply when set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// Availability of the cells not faulted, during each fault.
    pub healthy_availability_min: f64,
    /// Worst healthy cell's p99 during a fault over its baseline p99.
    pub healthy_p99_ratio_max: f64,
    pub lost_writes_max: u64,
    /// p99 of the faulted cells' 503 `cell_unavailable` answers.
    pub fast_fail_p99_ms_max: f64,
    /// From a fault's start to the faulted cell's first fast fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_detect_ms_max: Option<f64>,
    /// From a fault's end to the faulted cell being back to its baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_recover_s_max: Option<u32>,
    /// Share of touched keys that saw errors over the faulted cells' ring share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_key_share_ratio_max: Option<f64>,
    /// Every key's history (its reads, writes and conditional writes, with
    /// their times and outcomes) is linearizable. On by default.
    pub linearizable: bool,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            healthy_availability_min: 0.999,
            healthy_p99_ratio_max: 1.5,
            lost_writes_max: 0,
            fast_fail_p99_ms_max: 50.0,
            time_to_detect_ms_max: None,
            time_to_recover_s_max: None,
            error_key_share_ratio_max: None,
            linearizable: true,
        }
    }
}

impl Slo {
    /// The verdict on the linearizability check, if the SLO is on: every
    /// key checked is linearizable and none was left undecided. `None` for
    /// `lin` means the check did not run.
    pub fn evaluate_linearizability(&self, lin: Option<&Linearizability>) -> Option<SloResult> {
        if !self.linearizable {
            return None;
        }
        let (name, target) = (LINEARIZABLE_SLO, "= true".to_owned());
        let Some(l) = lin else {
            return Some(never(
                name,
                target,
                "the linearizability check did not run".to_owned(),
            ));
        };
        if let Some(why) = &l.skipped {
            return Some(not_applicable(name, target, why));
        }
        let mut note = l.summary();
        if let Some(v) = l.violations.first() {
            note.push_str(&format!("; first violation: {}", v.key));
        } else if let Some((k, why)) = l.undecided.first() {
            note.push_str(&format!("; undecided: {k}: {why}"));
        }
        Some(result(
            name,
            target,
            Some((l.not_linearizable as f64, note)),
            l.passed(),
        ))
    }
}

/// Share of a `slow_cell` delay its cell's median must show.
pub const SLOWDOWN_SEEN_MIN: f64 = 0.8;

/// One SLO's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    pub name: String,
    /// `">= 0.999"`, `"<= 50"`.
    pub target: String,
    /// The worst measured value; `None` when not applicable or never reached.
    pub actual: Option<f64>,
    pub pass: bool,
    /// Where the worst value came from, or why there is none.
    pub note: String,
}

fn result(name: &str, target: String, worst: Option<(f64, String)>, pass: bool) -> SloResult {
    let (actual, note) = match worst {
        Some((v, n)) => (Some(v), n),
        None => (None, String::new()),
    };
    SloResult {
        name: name.to_owned(),
        target,
        actual,
        pass,
        note,
    }
}

fn not_applicable(name: &str, target: String, why: &str) -> SloResult {
    SloResult {
        name: name.to_owned(),
        target,
        actual: None,
        pass: true,
        note: format!("not applicable: {why}"),
    }
}

fn never(name: &str, target: String, why: String) -> SloResult {
    SloResult {
        name: name.to_owned(),
        target,
        actual: None,
        pass: false,
        note: why,
    }
}

/// Keeps the larger (`max`) or smaller value with its note.
fn worst(acc: &mut Option<(f64, String)>, v: f64, note: String, max: bool) {
    let replace = match acc {
        None => true,
        Some((w, _)) => (max && v > *w) || (!max && v < *w),
    };
    if replace {
        *acc = Some((v, note));
    }
}

impl Slo {
    /// The verdict of every SLO that applies to the run. The fast-fail SLOs
    /// look only at windows that expect fast fails (`FaultWindow::expect_fast_fail`).
    pub fn evaluate(&self, a: &AnalysisResult) -> Vec<SloResult> {
        let mut out = Vec::new();
        let fast_fail_faults = || a.faults.iter().filter(|f| f.window.expect_fast_fail);

        // Healthy-cell availability and p99 ratio, worst over the faults.
        let name = "healthy_availability";
        let target = format!(">= {}", self.healthy_availability_min);
        let mut w = None;
        for f in &a.faults {
            if let Some(v) = f.healthy_availability {
                worst(&mut w, v, f.window.label.clone(), false);
            }
        }
        out.push(match w {
            Some((v, _)) => {
                let pass = v >= self.healthy_availability_min;
                result(name, target, w, pass)
            }
            None => not_applicable(name, target, "no healthy-cell traffic during a fault"),
        });

        let name = "healthy_p99_ratio";
        let target = format!("<= {}", self.healthy_p99_ratio_max);
        let mut w = None;
        for f in &a.faults {
            for h in &f.healthy {
                if let Some(r) = h.p99_ratio {
                    worst(
                        &mut w,
                        r,
                        format!("cell {} during {}", h.cell, f.window.label),
                        true,
                    );
                }
            }
        }
        out.push(match w {
            Some((v, _)) => {
                let pass = v <= self.healthy_p99_ratio_max;
                result(name, target, w, pass)
            }
            None => not_applicable(
                name,
                target,
                "no healthy cell with a baseline and fault p99",
            ),
        });

        // Fast fails: only where the fault should be refused fast and the cell failed.
        let name = "fast_fail_p99_ms";
        let target = format!("<= {}", self.fast_fail_p99_ms_max);
        let mut w = None;
        let mut slow_only = None;
        for f in fast_fail_faults() {
            for c in f.faulted.iter().filter(|c| c.during.failures > 0) {
                let at = format!("cell {} during {}", c.cell, f.window.label);
                match c.fast_fail_p99_ms {
                    Some(p) => worst(&mut w, p, at, true),
                    None => {
                        slow_only.get_or_insert(format!(
                            "{at}: {} failures, none fast (failure p99 {:.1} ms)",
                            c.during.failures,
                            c.failure_p99_ms.unwrap_or(0.0)
                        ));
                    }
                }
            }
        }
        out.push(match (w, slow_only) {
            (_, Some(why)) => never(name, target, why),
            (Some((v, n)), None) => {
                let pass = v <= self.fast_fail_p99_ms_max;
                result(name, target, Some((v, n)), pass)
            }
            (None, None) => not_applicable(name, target, "no faulted cell failed requests"),
        });

        if let Some(max) = self.time_to_detect_ms_max {
            let name = "time_to_detect_ms";
            let target = format!("<= {max}");
            let mut w = None;
            let mut missed = None;
            for f in fast_fail_faults() {
                for c in f.faulted.iter().filter(|c| c.during.failures > 0) {
                    let at = format!("cell {} during {}", c.cell, f.window.label);
                    match c.time_to_detect_ms {
                        Some(t) => worst(&mut w, t, at, true),
                        None => {
                            missed.get_or_insert(format!("{at}: failed but never fast-failed"));
                        }
                    }
                }
            }
            out.push(match (w, missed) {
                (_, Some(why)) => never(name, target, why),
                (Some((v, n)), None) => result(name, target, Some((v, n)), v <= max),
                (None, None) => not_applicable(name, target, "no faulted cell failed requests"),
            });
        }

        if let Some(max) = self.time_to_recover_s_max {
            let name = "time_to_recover_s";
            let target = format!("<= {max}");
            let mut w = None;
            let mut missed = None;
            for f in &a.faults {
                for c in &f.faulted {
                    let at = format!("cell {} after {}", c.cell, f.window.label);
                    match c.time_to_recover_s {
                        Some(t) => worst(&mut w, f64::from(t), at, true),
                        None => {
                            missed.get_or_insert(format!("{at}: not recovered by the end"));
                        }
                    }
                }
            }
            out.push(match (w, missed) {
                (_, Some(why)) => never(name, target, why),
                (Some((v, n)), None) => result(name, target, Some((v, n)), v <= f64::from(max)),
                (None, None) => not_applicable(name, target, "no faulted cell"),
            });
        }

        if let Some(max) = self.error_key_share_ratio_max {
            let name = "error_key_share_ratio";
            let target = format!("<= {max}");
            let mut w = None;
            for f in &a.faults {
                if let Some(s) = f.error_key_share {
                    let note = format!(
                        "{}: {} of {} keys ({:.2}%) vs bound {:.2}%",
                        f.window.label,
                        f.keys.failed,
                        f.keys.touched,
                        s * 100.0,
                        f.error_key_bound * 100.0
                    );
                    let ratio = if f.error_key_bound > 0.0 {
                        s / f.error_key_bound
                    } else if s > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    };
                    worst(&mut w, ratio, note, true);
                }
            }
            out.push(match w {
                Some((v, n)) => result(name, target, Some((v, n)), v <= max),
                None => not_applicable(name, target, "no keyed traffic during a fault"),
            });
        }

        // A slowed cell must show the delay (or be refused): else the fault
        // was not in the path and the run proves nothing.
        let slowed: Vec<_> = a
            .faults
            .iter()
            .filter_map(|f| f.window.added_latency_ms.map(|d| (f, d)))
            .collect();
        if !slowed.is_empty() {
            let name = "slowdown_applied";
            let target = format!(">= {SLOWDOWN_SEEN_MIN} of the added latency, or refused");
            let mut w = None;
            let mut missed = None;
            for (f, delay) in slowed {
                for c in &f.faulted {
                    let at = format!("cell {} during {}", c.cell, f.window.label);
                    let refused = c.during.requests > 0
                        && c.fast_fails as f64 >= 0.5 * c.during.requests as f64;
                    match c.added_p50_ms {
                        _ if refused => worst(
                            &mut w,
                            1.0,
                            format!("{at}: refused ({} fast fails)", c.fast_fails),
                            false,
                        ),
                        Some(added) if delay > 0.0 => worst(
                            &mut w,
                            added / delay,
                            format!("{at}: median {added:+.1} ms for +{delay} ms"),
                            false,
                        ),
                        _ => {
                            missed.get_or_insert(format!("{at}: no requests to measure"));
                        }
                    }
                }
            }
            out.push(match (w, missed) {
                (_, Some(why)) => never(name, target, why),
                (Some((v, n)), None) => result(name, target, Some((v, n)), v >= SLOWDOWN_SEEN_MIN),
                (None, None) => not_applicable(name, target, "no slowed cell"),
            });
        }

        let name = "lost_writes";
        let target = format!("<= {}", self.lost_writes_max);
        out.push(match a.lost_writes {
            Some(n) => result(
                name,
                target,
                Some((n as f64, String::new())),
                n <= self.lost_writes_max,
            ),
            None => never(name, target, "the lost-write check did not run".to_owned()),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use common::CellId;

    use super::*;
    use crate::analysis::{CellWindow, FaultAnalysis, FaultWindow, FaultedCell, HealthyCell};
    use crate::stats::{KeyShare, Phase};

    fn window(requests: u64, failures: u64, p99: f64) -> CellWindow {
        CellWindow {
            requests,
            failures,
            availability: Some(1.0 - failures as f64 / requests as f64),
            p99_ms: Some(p99),
            p50_ms: Some(p99 / 2.0),
        }
    }

    fn analysis(
        fast_fail_p99: Option<f64>,
        recover: Option<u32>,
        lost: Option<u64>,
    ) -> AnalysisResult {
        analysis_of(fast_fail_p99, recover, lost, true)
    }

    fn analysis_of(
        fast_fail_p99: Option<f64>,
        recover: Option<u32>,
        lost: Option<u64>,
        expect_fast_fail: bool,
    ) -> AnalysisResult {
        let healthy = |cell: u32, p99: f64, fails: u64| HealthyCell {
            cell: CellId(cell),
            baseline: window(1000, 0, 2.0),
            during: window(1000, fails, p99),
            p99_ratio: Some(p99 / 2.0),
        };
        AnalysisResult {
            baseline: Phase::new("steady", 5, 25),
            faults: vec![FaultAnalysis {
                window: FaultWindow {
                    label: "kill_cell cell 2".into(),
                    start_s: 30,
                    end_s: 40,
                    cells: vec![CellId(2)],
                    expect_fast_fail,
                    added_latency_ms: None,
                },
                healthy: vec![healthy(1, 2.5, 0), healthy(3, 3.2, 1)],
                faulted: vec![FaultedCell {
                    cell: CellId(2),
                    baseline: window(1000, 0, 2.0),
                    during: window(1000, 1000, 1.0),
                    fast_fails: if fast_fail_p99.is_some() { 1000 } else { 0 },
                    fast_fail_p99_ms: fast_fail_p99,
                    failure_p99_ms: Some(fast_fail_p99.unwrap_or(5000.0)),
                    time_to_detect_ms: fast_fail_p99.map(|_| 800.0),
                    time_to_recover_s: recover,
                    added_p50_ms: None,
                }],
                healthy_availability: Some(1999.0 / 2000.0),
                healthy_p99_ratio: Some(1.6),
                keys: KeyShare {
                    touched: 900,
                    failed: 330,
                },
                error_key_share: Some(330.0 / 900.0),
                error_key_bound: 1.0 / 3.0,
            }],
            lost_writes: lost,
        }
    }

    fn verdicts(slo: &Slo, a: &AnalysisResult) -> Vec<(String, bool)> {
        slo.evaluate(a)
            .into_iter()
            .map(|r| (r.name, r.pass))
            .collect()
    }

    #[test]
    fn slo_verdicts_on_known_figures() {
        let slo = Slo {
            time_to_detect_ms_max: Some(1000.0),
            time_to_recover_s_max: Some(5),
            error_key_share_ratio_max: Some(1.2),
            ..Slo::default()
        };
        let a = analysis(Some(1.0), Some(3), Some(0));
        let r = slo.evaluate(&a);
        let by_name: BTreeMap<&str, &SloResult> = r.iter().map(|r| (r.name.as_str(), r)).collect();
        // 0.9995 ≥ 0.999; worst p99 ratio 1.6 > 1.5 (cell 3).
        assert!(by_name["healthy_availability"].pass);
        assert_eq!(by_name["healthy_availability"].actual, Some(0.9995));
        let ratio = by_name["healthy_p99_ratio"];
        assert!(!ratio.pass);
        assert_eq!(ratio.note, "cell 3 during kill_cell cell 2");
        assert!(by_name["fast_fail_p99_ms"].pass);
        assert_eq!(by_name["time_to_detect_ms"].actual, Some(800.0));
        assert!(by_name["time_to_recover_s"].pass);
        // (330/900) / (1/3) = 1.1 ≤ 1.2.
        let share = by_name["error_key_share_ratio"];
        assert!(share.pass && (share.actual.unwrap() - 1.1).abs() < 1e-9);
        assert!(by_name["lost_writes"].pass);
        assert_eq!(r.len(), 7);

        // Failing only with timeouts, never recovering, losing writes.
        let a = analysis(None, None, Some(2));
        let v = verdicts(&slo, &a);
        for name in [
            "fast_fail_p99_ms",
            "time_to_detect_ms",
            "time_to_recover_s",
            "lost_writes",
        ] {
            assert!(v.contains(&(name.to_owned(), false)), "{name}: {v:?}");
        }
        // The lost-write check must have run.
        let a = analysis(Some(1.0), Some(1), None);
        assert!(verdicts(&Slo::default(), &a).contains(&("lost_writes".to_owned(), false)));
        // Where no fast fail is expected (router restart), that SLO does not apply.
        let r = Slo::default().evaluate(&analysis_of(None, Some(1), Some(0), false));
        let ff = r.iter().find(|r| r.name == "fast_fail_p99_ms").unwrap();
        assert!(ff.pass && ff.note.starts_with("not applicable"));
    }
}
