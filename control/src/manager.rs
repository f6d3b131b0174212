//! `JobManager`: which jobs exist, which run here, and the operator's
//! requests to them. At most one job is active (running or paused) at a
//! time: jobs derive their moves from the map's target, so two would fight.
//! Jobs run only while this server holds the job lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::backend::{store_err, ClusterBackend};
use crate::job::{Job, JobRequest, JobRunner, JobStatus, RunnerConfig, Signals, StepError};
use crate::store::JOB_PREFIX;

#[derive(Debug, Error)]
pub enum JobError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoLease(String),
    #[error("{0}")]
    Store(String),
}

pub struct JobManager {
    pub backend: Arc<ClusterBackend>,
    cfg: RunnerConfig,
    /// Signals of the runners in this process. A std mutex, never held across an await.
    running: Mutex<HashMap<String, Arc<Signals>>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl JobManager {
    pub fn new(backend: Arc<ClusterBackend>, cfg: RunnerConfig) -> Arc<JobManager> {
        Arc::new(JobManager {
            backend,
            cfg,
            running: Mutex::new(HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        self.backend.jobs.lock().expect("jobs lock")
    }

    /// Reads every job record from the control store.
    pub async fn load_all(&self) -> Result<(), StepError> {
        let store = &self.backend.store;
        let keys = store.list(JOB_PREFIX).await.map_err(store_err)?;
        for k in keys {
            if let Some((job, _)) = store.get_json::<Job>(&k).await.map_err(store_err)? {
                self.jobs().insert(job.id.clone(), job);
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Job> {
        let mut v: Vec<Job> = self.jobs().values().cloned().collect();
        v.sort_by_key(|j| std::cmp::Reverse(j.created_ms));
        v
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs().get(id).cloned()
    }

    pub fn active(&self) -> Option<Job> {
        self.jobs().values().find(|j| j.status.is_active()).cloned()
    }

    fn require_lease(&self) -> Result<(), JobError> {
        if self.backend.lease.held() {
            return Ok(());
        }
        let other = self.backend.lease.other.lock().expect("lease lock").clone();
        Err(JobError::NoLease(match other {
            Some(l) => format!(
                "another control server ({}) holds the job lease; run job operations there",
                l.holder
            ),
            None => "this control server does not hold the job lease yet (control cell unreachable?); retry shortly".into(),
        }))
    }

    /// Refuses when a job is active, naming it.
    /// A job could start here now: this server holds the job lease and no
    /// job is active. Checked before a handler changes the map for a job
    /// (marking a cell draining), so a refusal leaves the map untouched.
    pub fn check_idle(&self) -> Result<(), JobError> {
        self.require_lease()?;
        match self.active() {
            Some(j) => Err(JobError::Conflict(format!(
                "job {} ({:?}) is {:?}; wait for it (cellkvctl jobs show {} --wait), or cancel it first",
                j.id, j.kind, j.status, j.id
            ))),
            None => Ok(()),
        }
    }

    /// Saves a new job and starts it.
    pub async fn start(self: &Arc<Self>, job: Job) -> Result<Job, JobError> {
        self.check_idle()?;
        self.save(&job).await?;
        self.spawn(job.clone());
        Ok(job)
    }

    async fn save(&self, job: &Job) -> Result<(), JobError> {
        self.backend
            .store
            .put_json(&crate::store::job_key(&job.id), job)
            .await
            .map_err(|e| JobError::Store(e.to_string()))?;
        self.jobs().insert(job.id.clone(), job.clone());
        Ok(())
    }

    fn spawn(self: &Arc<Self>, job: Job) {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let mut running = self.running.lock().expect("running lock");
        if running.contains_key(&job.id) {
            return;
        }
        let signals = Arc::new(Signals::default());
        running.insert(job.id.clone(), signals.clone());
        drop(running);
        let me = self.clone();
        let runner = JobRunner::new(self.backend.clone(), signals, self.cfg.clone(), job);
        tokio::spawn(async move {
            let id = runner.job().id.clone();
            tracing::info!(job = %id, "job runner started");
            let job = runner.run().await;
            tracing::info!(job = %id, status = ?job.status, phase = ?job.phase, "job runner stopped");
            me.running.lock().expect("running lock").remove(&id);
            me.jobs().insert(id, job);
        });
    }

    /// Starts the runners of every running job (after taking the lease).
    pub fn resume_running(self: &Arc<Self>) {
        let jobs: Vec<Job> = self
            .jobs()
            .values()
            .filter(|j| j.status == JobStatus::Running)
            .cloned()
            .collect();
        for j in jobs {
            tracing::info!(job = %j.id, phase = ?j.phase, "resuming job");
            self.spawn(j);
        }
    }

    /// Stops every runner here at its next resumable point (lease lost, shutdown).
    pub fn stop_all(&self) {
        for s in self.running.lock().expect("running lock").values() {
            s.stop();
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop_all();
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().expect("running lock").len()
    }

    /// Pause or cancel.
    pub async fn request(self: &Arc<Self>, id: &str, r: JobRequest) -> Result<Job, JobError> {
        self.require_lease()?;
        let job = self.get(id).ok_or_else(|| JobError::NotFound(id.into()))?;
        if !job.status.is_active() {
            return Err(JobError::Conflict(format!(
                "job {id} is {:?}; only running or paused jobs can be paused or cancelled",
                job.status
            )));
        }
        let sig = self.running.lock().expect("running lock").get(id).cloned();
        match sig {
            Some(s) => {
                s.request(r);
                let mut j = job;
                j.requested = Some(r);
                Ok(j)
            }
            None => {
                // Not running here: a paused job (no batch in flight), or a
                // running one whose runner has not started yet.
                let mut j = job;
                match (r, j.status) {
                    (JobRequest::Cancel, JobStatus::Paused) => {
                        // Cancelling needs the runner for a drain's cell state
                        // and pending purges: run it with the request set.
                        j.requested = Some(JobRequest::Cancel);
                        j.status = JobStatus::Running;
                        self.save(&j).await?;
                        self.spawn(j.clone());
                    }
                    (JobRequest::Pause, JobStatus::Paused) => {}
                    _ => {
                        j.requested = Some(r);
                        self.save(&j).await?;
                        self.spawn(j.clone());
                    }
                }
                Ok(j)
            }
        }
    }

    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<Job, JobError> {
        self.require_lease()?;
        let mut job = self.get(id).ok_or_else(|| JobError::NotFound(id.into()))?;
        match job.status {
            JobStatus::Paused => {
                job.status = JobStatus::Running;
                job.requested = None;
                job.message = None;
                self.save(&job).await?;
                self.spawn(job.clone());
                Ok(job)
            }
            JobStatus::Running => {
                self.spawn(job.clone());
                Ok(job)
            }
            s => Err(JobError::Conflict(format!(
                "job {id} is {s:?}; it cannot be resumed"
            ))),
        }
    }
}

/// A new job id: time-ordered and unique enough for one control plane.
pub fn new_job_id() -> String {
    let now = crate::job::now_ms();
    let n: u32 = std::process::id() ^ (now as u32).rotate_left(7);
    format!("j{now}-{:04x}", n & 0xffff)
}
