//! `ControlMetrics`: Prometheus metrics of the control server. Job gauges are
//! refreshed from the job records at scrape time (labels: job id, bounded by
//! the jobs kept in the control store).

use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::job::{Job, JobStatus};

pub struct ControlMetrics {
    /// Served on `/metrics`, after `refresh_jobs`.
    pub registry: Registry,
    pub map_epoch: IntGauge,
    pub lease_held: IntGauge,
    pub admin_requests: IntCounterVec,
    job: GaugeVec,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlMetrics {
    pub fn new() -> ControlMetrics {
        let registry = Registry::new();
        let map_epoch = IntGauge::new(
            "cellkv_control_map_epoch",
            "epoch of the last cell map read",
        )
        .expect("metric");
        let lease_held = IntGauge::new(
            "cellkv_control_lease_held",
            "1 while this server holds the job lease",
        )
        .expect("metric");
        let admin_requests = IntCounterVec::new(
            Opts::new("cellkv_control_admin_requests_total", "admin API requests"),
            &["status"],
        )
        .expect("metric");
        let job = GaugeVec::new(
            Opts::new(
                "cellkv_control_job",
                "progress of active jobs: ranges_done, ranges_total, keys_copied, bytes_copied, bytes_estimated, pause_max_ms, pause_p99_ms, rate_bytes_per_sec, eta_secs",
            ),
            &["job", "field"],
        )
        .expect("metric");
        for c in [
            Box::new(map_epoch.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lease_held.clone()),
            Box::new(admin_requests.clone()),
            Box::new(job.clone()),
        ] {
            registry.register(c).expect("register metric");
        }
        ControlMetrics {
            registry,
            map_epoch,
            lease_held,
            admin_requests,
            job,
        }
    }

    /// Sets the job gauges to `jobs` (dropping those of jobs no longer active).
    pub fn refresh_jobs(&self, jobs: &[Job]) {
        self.job.reset();
        for j in jobs
            .iter()
            .filter(|j| j.status == JobStatus::Running || j.status == JobStatus::Paused)
        {
            let v = crate::job::view(j);
            let p = &j.progress;
            for (field, value) in [
                ("ranges_done", p.ranges_done as f64),
                ("ranges_total", p.ranges_total as f64),
                ("keys_copied", p.keys_copied as f64),
                ("bytes_copied", p.bytes_copied as f64),
                ("bytes_estimated", p.bytes_estimated as f64),
                ("pause_max_ms", v.pause_max_ms.unwrap_or(0) as f64),
                ("pause_p99_ms", v.pause_p99_ms.unwrap_or(0) as f64),
                ("rate_bytes_per_sec", v.rate_bytes_per_sec),
                ("eta_secs", v.eta_secs.unwrap_or(0.0)),
                (
                    "running",
                    f64::from(u8::from(j.status == JobStatus::Running)),
                ),
            ] {
                self.job
                    .with_label_values(&[j.id.as_str(), field])
                    .set(value);
            }
        }
    }
}
