//! A client of the control server's admin API (`cellkv-control`, see
//! `docs/control-plane.md`) as the harness uses it: status, the live cell
//! map, drain and add, and following a job to its end (`follow_job`) with
//! the figures a report keeps (`JobFigures`). JSON over the lean HTTP client;
//! it never links the control crate: the bodies are `common::admin`'s.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use common::admin::{AddCellRequest, CellAdded, JobOptions, JobStarted, StatusResponse};
pub use common::admin::{JobProgress, JobStatus, JobView};
use common::{CellId, CellMap, CellSpec};
use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{Client, ClientConfig};

/// Deadline of one admin call: `POST /v1/cells` probes the new cell, and a
/// status reads every cell's range stats, so this is not a probe's 1 s.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a followed job is read.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// A client of one control server's admin API, with its admin token.
#[derive(Clone)]
pub struct AdminClient {
    client: Client,
    url: String,
    auth: String,
}

impl AdminClient {
    /// `url` is `http://host:port` of the admin API.
    pub fn new(url: &str, admin_token: &str) -> AdminClient {
        AdminClient {
            client: Client::new(ClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: ADMIN_TIMEOUT,
                pool_max_idle_per_host: 2,
                ..ClientConfig::default()
            }),
            url: url.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {admin_token}"),
        }
    }

    /// The same client with another deadline per call.
    pub fn with_timeout(mut self, request_timeout: Duration) -> AdminClient {
        self.client = self.client.with_timeout(request_timeout);
        self
    }

    /// `http://host:port` of the admin API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `method path` with a JSON body; the status and the JSON answer
    /// (`Null` when the body is not JSON). Fails only on transport errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut headers = vec![("authorization", self.auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let bytes = match &body {
            Some(b) => Bytes::from(serde_json::to_vec(b).context("serialize the request body")?),
            None => Bytes::new(),
        };
        let url = format!("{}{path}", self.url);
        let r = self
            .client
            .request(method.clone(), &url, &headers, bytes)
            .await
            .with_context(|| format!("{method} {url}"))?;
        Ok((
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        ))
    }

    /// Like [`call`](Self::call), failing on any answer but 2xx, with the
    /// control server's error code and message.
    pub async fn must(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            bail!(
                "{method} {}{path} answered {status} {}: {}",
                self.url,
                v["error"]["code"].as_str().unwrap_or(""),
                v["error"]["message"]
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_owned)
            );
        }
        Ok(v)
    }

    /// Like [`must`](Self::must), with a typed body and answer.
    async fn must_typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .context("serialize the request body")?;
        let v = self.must(method.clone(), path, body).await?;
        serde_json::from_value(v.clone())
            .with_context(|| format!("parse the answer of {method} {path}: {v}"))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse> {
        self.must_typed(Method::GET, "/v1/status", NO_BODY).await
    }

    /// `GET /v1/map`: the live cell map.
    pub async fn map(&self) -> Result<CellMap> {
        self.must_typed(Method::GET, "/v1/map", NO_BODY).await
    }

    /// `POST /v1/cells/{cell}/drain`: the started job.
    pub async fn drain(&self, cell: CellId, bandwidth: Option<u64>) -> Result<JobView> {
        let path = format!("/v1/cells/{cell}/drain");
        let started: JobStarted = self
            .must_typed(Method::POST, &path, Some(&JobOptions { bandwidth }))
            .await?;
        Ok(started.job)
    }

    /// `POST /v1/cells`: registers a started cell and rebalances onto it; the started job.
    pub async fn add_cell(&self, spec: &CellSpec, bandwidth: Option<u64>) -> Result<JobView> {
        let body = AddCellRequest {
            id: spec.id,
            weight: spec.weight,
            replicas: spec.replicas.clone(),
            rebalance: true,
            bandwidth,
        };
        let added: CellAdded = self
            .must_typed(Method::POST, "/v1/cells", Some(&body))
            .await?;
        added
            .job
            .with_context(|| format!("adding cell {} started no job", spec.id))
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView> {
        self.must_typed(Method::GET, &format!("/v1/jobs/{id}"), NO_BODY)
            .await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<JobView> {
        self.must_typed(Method::POST, &format!("/v1/jobs/{id}/cancel"), NO_BODY)
            .await
    }

    /// Reads job `id` every [`FOLLOW_POLL`] until it is done, calling
    /// `progress` with each view. Fails when it ends otherwise (failed,
    /// cancelled, or paused: a job pauses itself when a step keeps failing,
    /// and then needs an operator), or is not done by `deadline`.
    pub async fn follow_job(
        &self,
        id: &str,
        deadline: Instant,
        mut progress: impl FnMut(&JobView),
    ) -> Result<JobView, FollowError> {
        let mut last: Option<JobView> = None;
        let mut last_error = String::new();
        loop {
            match self.job(id).await {
                Ok(j) => {
                    progress(&j);
                    match j.job.status {
                        JobStatus::Done => return Ok(j),
                        JobStatus::Running => {}
                        JobStatus::Failed | JobStatus::Cancelled | JobStatus::Paused => {
                            return Err(FollowError::Ended(Box::new(j)))
                        }
                    }
                    last = Some(j);
                }
                Err(e) => last_error = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                return Err(FollowError::TimedOut {
                    last: last.map(Box::new),
                    last_error,
                });
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Why a followed job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("job {} ended {:?}{}", .0.job.id, .0.job.status, .0.job.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Ended(Box<JobView>),
    #[error("the job is not done in time{}{}", .last.as_ref().map(|j| format!(" (phase {}, {} of {} ranges, {} bytes copied)", j.job.phase, j.job.progress.ranges_done, j.job.progress.ranges_total, j.job.progress.bytes_copied)).unwrap_or_default(), if .last_error.is_empty() { String::new() } else { format!("; last error: {}", .last_error) })]
    TimedOut {
        last: Option<Box<JobView>>,
        last_error: String,
    },
}

impl FollowError {
    /// The last view of the job, if one was read.
    pub fn last_view(&self) -> Option<&JobView> {
        match self {
            FollowError::Ended(j) => Some(j),
            FollowError::TimedOut { last, .. } => last.as_deref(),
        }
    }
}

/// No request body.
const NO_BODY: Option<&()> = None;

/// `"copy 3/12 ranges, 40.1 MiB, 31.2 MB/s"`.
pub fn progress_line(j: &JobView) -> String {
    let p = &j.job.progress;
    format!(
        "{} {}/{} ranges, {:.1} MiB, {:.1} MB/s",
        j.job.phase,
        p.ranges_done,
        p.ranges_total,
        p.bytes_copied as f64 / f64::from(1u32 << 20),
        j.rate_bytes_per_sec / 1e6
    )
}

/// A job's figures as a report keeps them: what moved, how fast, and the
/// write pause of its batches, as the control API reports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFigures {
    pub job: String,
    pub kind: String,
    pub status: JobStatus,
    #[serde(default)]
    pub message: Option<String>,
    pub ranges_total: u64,
    pub ranges_done: u64,
    pub batches: u64,
    pub keys_copied: u64,
    pub bytes_copied: u64,
    pub keys_deleted: u64,
    /// What the plan expected to copy (the sources' range stats).
    pub bytes_estimated: u64,
    /// The copy rate limit the job ran under.
    pub bandwidth_bytes_per_sec: u64,
    /// From the job's creation to its end, by the control server's clock
    /// (`None` while it runs).
    pub elapsed_s: Option<f64>,
    /// Time the job ran (not paused).
    pub active_s: f64,
    /// `bytes_copied / active_s` in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// `keys_copied / active_s`.
    pub keys_per_s: f64,
    /// Longest and 99th-percentile write pause (fence → release) of a batch.
    pub pause_max_ms: Option<u64>,
    pub pause_p99_ms: Option<u64>,
    /// Batches whose pause was measured.
    pub pauses: usize,
}

impl JobFigures {
    pub fn of(v: &JobView) -> JobFigures {
        let j = &v.job;
        let p = &j.progress;
        let active_s = p.active_ms as f64 / 1000.0;
        let per_s = |n: u64| {
            if active_s > 0.0 {
                n as f64 / active_s
            } else {
                0.0
            }
        };
        JobFigures {
            job: j.id.clone(),
            kind: j.kind.name().to_owned(),
            status: j.status,
            message: j.message.clone(),
            ranges_total: p.ranges_total,
            ranges_done: p.ranges_done,
            batches: p.batches_done,
            keys_copied: p.keys_copied,
            bytes_copied: p.bytes_copied,
            keys_deleted: p.keys_deleted,
            bytes_estimated: p.bytes_estimated,
            bandwidth_bytes_per_sec: j.bandwidth_bytes_per_sec,
            elapsed_s: j
                .finished_ms
                .map(|f| f.saturating_sub(j.created_ms) as f64 / 1000.0),
            active_s,
            mb_per_s: if active_s > 0.0 {
                v.rate_bytes_per_sec.max(0.0) / 1e6
            } else {
                0.0
            },
            keys_per_s: per_s(p.keys_copied),
            pause_max_ms: v.pause_max_ms,
            pause_p99_ms: v.pause_p99_ms,
            pauses: j.pauses_ms.len(),
        }
    }

    /// One line: `12 ranges, 4096 keys, 1024.0 MiB in 21.3 s: 50.4 MB/s,
    /// 192 keys/s, write pause max 14 ms p99 13 ms`.
    pub fn summary(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "{} ranges, {} keys, {:.1} MiB in {:.1} s: {:.1} MB/s, {:.0} keys/s, write pause max {} ms p99 {} ms",
            self.ranges_done,
            self.keys_copied,
            self.bytes_copied as f64 / f64::from(1u32 << 20),
            self.active_s,
            self.mb_per_s,
            self.keys_per_s,
            opt(self.pause_max_ms),
            opt(self.pause_p99_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A job view as `GET /v1/jobs/{id}` answers it (docs/control-plane.md).
    fn view() -> Value {
        json!({
            "id": "j-17", "kind": "drain", "cell": 3, "status": "done", "message": null,
            "requested": null, "created_ms": 1_000, "updated_ms": 22_000, "finished_ms": 21_500,
            "bandwidth_bytes_per_sec": 268_435_456u64, "batch_max_bytes": 67_108_864u64,
            "batch_max_ranges": 512, "phase": "finish", "batch": null,
            "progress": {"ranges_total": 12, "ranges_done": 12, "batches_done": 16,
                         "keys_copied": 4096, "bytes_copied": 1_073_741_824u64, "keys_deleted": 0,
                         "bytes_estimated": 1_073_741_824u64, "active_ms": 20_000},
            "pauses_ms": [3, 5, 9], "purges": [],
            "rate_bytes_per_sec": 53_687_091.2, "eta_secs": null,
            "pause_max_ms": 9, "pause_p99_ms": 9
        })
    }

    #[test]
    fn job_view_parses_and_gives_its_figures() {
        let j: JobView = serde_json::from_value(view()).unwrap();
        assert_eq!(
            (j.job.status, j.job.kind.cell(), j.job.kind.name()),
            (JobStatus::Done, Some(CellId(3)), "drain")
        );
        let f = JobFigures::of(&j);
        assert_eq!(f.elapsed_s, Some(20.5));
        assert_eq!(f.active_s, 20.0);
        assert!((f.mb_per_s - 53.687).abs() < 0.01, "{}", f.mb_per_s);
        assert!((f.keys_per_s - 204.8).abs() < 1e-9);
        assert_eq!(
            (f.pause_max_ms, f.pause_p99_ms, f.pauses),
            (Some(9), Some(9), 3)
        );
        let line = f.summary();
        assert!(
            line.starts_with("12 ranges, 4096 keys, 1024.0 MiB in 20.0 s: 53.7 MB/s"),
            "{line}"
        );
        assert!(line.ends_with("write pause max 9 ms p99 9 ms"), "{line}");
        // A rebalance has no cell; a running job no end.
        let mut v = view();
        v["kind"] = json!("rebalance");
        v.as_object_mut().unwrap().remove("cell");
        v["status"] = json!("running");
        v["finished_ms"] = Value::Null;
        let j: JobView = serde_json::from_value(v).unwrap();
        assert_eq!(
            (j.job.kind.cell(), JobFigures::of(&j).elapsed_s),
            (None, None)
        );
        assert_eq!(
            progress_line(&j),
            "finish 12/12 ranges, 1024.0 MiB, 53.7 MB/s"
        );
    }

    #[test]
    fn follow_errors_say_why() {
        let mut v = view();
        v["status"] = json!("paused");
        v["message"] = json!("cell 1 refused ingest");
        let j: JobView = serde_json::from_value(v).unwrap();
        let e = FollowError::Ended(Box::new(j));
        assert_eq!(
            e.to_string(),
            "job j-17 ended Paused: cell 1 refused ingest"
        );
        let e = FollowError::TimedOut {
            last: None,
            last_error: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "the job is not done in time; last error: connection refused"
        );
        assert!(e.last_view().is_none());
    }
}
