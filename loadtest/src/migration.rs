//! The moves a scenario runs through the control server (`drain_cell`,
//! `add_cell`): ask for the job, follow it until it is done or the fault's
//! `duration_s` runs out (then cancel it), print its progress, and keep what
//! happened and the job's figures as a [`MoveRecord`] for the report.
//! Starting an added cell's processes is the driver's (`LocalCluster::add_cell`);
//! the HTTP is `admin`'s.

use std::time::{Duration, Instant};

use common::{CellId, CellSpec};
use serde::{Deserialize, Serialize};

use crate::scenario::FaultKind;
use client::admin::{AdminClient, JobFigures, JobView};

/// How often the progress of a followed job is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One move of a run, as the report keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// Index of the fault in the scenario.
    pub fault: usize,
    /// `"drain_cell cell 3"`, `"add_cell cell 4"`.
    pub label: String,
    pub kind: FaultKind,
    /// The drained or added cell.
    pub cell: Option<CellId>,
    /// Seconds from the start of the load: the fault's start (an added
    /// cell's processes start then), the job's acceptance, and its end
    /// (done, or given up on).
    pub started_s: f64,
    pub job_started_s: Option<f64>,
    pub ended_s: Option<f64>,
    /// The job finished (`done`) within the fault's duration.
    pub done: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job's figures as last read (final when `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobFigures>,
}

impl MoveRecord {
    /// A move that has not got a job yet.
    pub fn new(fault: usize, kind: FaultKind, cell: Option<CellId>, started_s: f64) -> MoveRecord {
        MoveRecord {
            fault,
            label: match cell {
                Some(c) => format!("{} cell {c}", kind.as_str()),
                None => kind.as_str().to_owned(),
            },
            kind,
            cell,
            started_s,
            job_started_s: None,
            ended_s: None,
            done: false,
            error: None,
            job: None,
        }
    }

    /// The failure before any job existed.
    pub fn failed(mut self, at_s: f64, why: String) -> MoveRecord {
        self.done = false;
        self.ended_s = Some(at_s);
        self.error = Some(why);
        self
    }

    /// The whole seconds `[start, end)` the move ran, for the analysis
    /// (`None` unless it finished).
    pub fn window_s(&self) -> Option<(u32, u32)> {
        let end = self.ended_s.filter(|_| self.done)?;
        let start = self.started_s.max(0.0).floor() as u32;
        let end = (end.ceil() as u32).max(start + 1);
        Some((start, end))
    }

    /// One line for the terminal: what moved and how fast, or why it failed.
    pub fn summary(&self) -> String {
        let took = match (self.job_started_s, self.ended_s) {
            (Some(a), Some(b)) => format!(" [{a:.1} s, {b:.1} s]"),
            _ => String::new(),
        };
        let job = self.job.as_ref();
        let id = job.map_or_else(String::new, |j| format!(" job {}", j.job));
        match (&self.error, job) {
            (None, Some(j)) => format!("{}{id}{took}: done, {}", self.label, j.summary()),
            (Some(e), Some(j)) => format!(
                "{}{id}{took}: FAILED: {e} (at that point: {})",
                self.label,
                j.summary()
            ),
            (Some(e), None) => format!("{}{took}: FAILED: {e}", self.label),
            (None, None) => format!("{}{took}: no job", self.label),
        }
    }
}

/// Drains `cell`: asks the control server, then [`follow`]s the job.
pub async fn drain(
    admin: &AdminClient,
    mut rec: MoveRecord,
    cell: CellId,
    bandwidth: Option<u64>,
    t0: Instant,
    deadline: Instant,
) -> MoveRecord {
    match admin.drain(cell, bandwidth).await {
        Ok(job) => follow(admin, rec, job, t0, deadline).await,
        Err(e) => {
            rec.ended_s = Some(t0.elapsed().as_secs_f64());
            rec.error = Some(format!("the control server refused the drain: {e:#}"));
            rec
        }
    }
}

/// Registers the started cell `spec` and rebalances onto it, then
/// [`follow`]s the job.
pub async fn add(
    admin: &AdminClient,
    mut rec: MoveRecord,
    spec: &CellSpec,
    bandwidth: Option<u64>,
    t0: Instant,
    deadline: Instant,
) -> MoveRecord {
    match admin.add_cell(spec, bandwidth).await {
        Ok(job) => follow(admin, rec, job, t0, deadline).await,
        Err(e) => {
            rec.ended_s = Some(t0.elapsed().as_secs_f64());
            rec.error = Some(format!("the control server refused the new cell: {e:#}"));
            rec
        }
    }
}

/// Follows `job` until it is done or `deadline`, printing its progress; a
/// job still running then is cancelled (a drain's cell becomes active again).
pub async fn follow(
    admin: &AdminClient,
    mut rec: MoveRecord,
    job: JobView,
    t0: Instant,
    deadline: Instant,
) -> MoveRecord {
    let at = |t0: Instant| t0.elapsed().as_secs_f64();
    rec.job_started_s = Some(at(t0));
    rec.job = Some(JobFigures::of(&job));
    eprintln!(
        "cellkv-loadtest: t={:.0}s {}: job {} started ({} ranges, {:.1} MiB estimated)",
        at(t0),
        rec.label,
        job.job.id,
        job.job.progress.ranges_total,
        job.job.progress.bytes_estimated as f64 / f64::from(1u32 << 20)
    );
    let mut last_print = Instant::now();
    let label = rec.label.clone();
    let outcome = admin
        .follow_job(&job.job.id, deadline, |j| {
            if last_print.elapsed() >= PROGRESS_EVERY {
                last_print = Instant::now();
                eprintln!(
                    "cellkv-loadtest: t={:.0}s {label}: {}",
                    at(t0),
                    client::admin::progress_line(j)
                );
            }
        })
        .await;
    rec.ended_s = Some(at(t0));
    match outcome {
        Ok(done) => {
            rec.done = true;
            rec.job = Some(JobFigures::of(&done));
        }
        Err(e) => {
            if let Some(v) = e.last_view() {
                rec.job = Some(JobFigures::of(v));
            }
            let mut why = format!("{e}");
            if matches!(e, client::admin::FollowError::TimedOut { .. }) {
                why = format!("{why} (the fault's duration_s)");
                match admin.cancel(&job.job.id).await {
                    Ok(_) => why.push_str("; cancelled it"),
                    Err(c) => why.push_str(&format!("; cancelling it failed too: {c:#}")),
                }
            }
            rec.error = Some(why);
        }
    }
    eprintln!("cellkv-loadtest: {}", rec.summary());
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_the_move_in_whole_seconds() {
        let mut r = MoveRecord::new(0, FaultKind::DrainCell, Some(CellId(3)), 25.0);
        assert_eq!(r.label, "drain_cell cell 3");
        assert_eq!(r.window_s(), None, "not finished");
        r.ended_s = Some(41.2);
        assert_eq!(r.window_s(), None, "not done");
        r.done = true;
        assert_eq!(r.window_s(), Some((25, 42)));
        r.ended_s = Some(25.1);
        assert_eq!(r.window_s(), Some((25, 26)));
        let f = r.clone().failed(30.0, "refused".into());
        assert_eq!(f.summary(), "drain_cell cell 3: FAILED: refused");
        assert_eq!(
            MoveRecord::new(1, FaultKind::AddCell, None, 3.0).summary(),
            "add_cell: no job"
        );
    }
}
