//! [`AttachedCluster`]: a cluster that a running `cellkv-local` owns, found
//! through its `cluster.json` and faulted by asking `cellkv-local`'s API
//! (`local::api`). The processes stay `cellkv-local`'s children and it alone
//! rewrites `cluster.json`, so nothing here signals a pid or spawns a process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use client::admin::AdminClient;
use common::{CellId, CellSpec};
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::drive::{Cluster, Endpoints, Fut};
use crate::local::api::{
    AddCellRequest, AddCellResponse, KillLeaderResponse, SetDelayRequest, WarningsResponse,
};
use crate::local::{next_free_id, read_cluster_json, ClusterInfo, LocalLayout, CLUSTER_FILE};

/// Deadline of a call to `cellkv-local`'s API: starting a cell, or stopping
/// the router (its drain), takes seconds.
const LOCAL_API_TIMEOUT: Duration = Duration::from_secs(120);

/// A cluster `cellkv-local` runs, driven through its API.
pub struct AttachedCluster {
    path: PathBuf,
    info: Mutex<ClusterInfo>,
    api: AdminClient,
}

impl AttachedCluster {
    /// `path` may be the cluster directory or its `cluster.json`.
    pub fn resolve(path: &Path) -> PathBuf {
        if path.is_dir() {
            path.join(CLUSTER_FILE)
        } else {
            path.to_owned()
        }
    }

    /// Reads `cluster.json` (at `path`, or in the directory `path`); fails
    /// if it names no `cellkv-local` API to drive the cluster through.
    pub fn open(path: &Path) -> Result<AttachedCluster> {
        let path = Self::resolve(path);
        let info = read_cluster_json(&path).context(
            "the cluster's description (is the cluster running? `cellkv-local` writes it once \
             everything serves)",
        )?;
        let (Some(api), Some(control)) = (&info.local_api, &info.control) else {
            bail!(
                "{} names no cellkv-local API (written by an older cellkv-local? start the \
                 cluster again with this one)",
                path.display()
            );
        };
        let api = AdminClient::new(&api.url, &control.admin_token).with_timeout(LOCAL_API_TIMEOUT);
        Ok(AttachedCluster {
            path,
            info: Mutex::new(info),
            api,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClusterInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the description lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The description as `cellkv-local` last reported it.
    pub fn info(&self) -> ClusterInfo {
        self.lock().clone()
    }

    /// Reads the description again from `cellkv-local` (pids change with faults).
    pub async fn refresh(&self) -> Result<ClusterInfo> {
        let info: ClusterInfo = self.get("/v1/cluster").await?;
        *self.lock() = info.clone();
        Ok(info)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self.api.must(Method::GET, path, None).await?;
        serde_json::from_value(v).with_context(|| format!("parse the answer to GET {path}"))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .context("serialize the request")?;
        let v = self.api.must(method.clone(), path, body).await?;
        serde_json::from_value(v).with_context(|| format!("parse the answer to {method} {path}"))
    }

    /// A request without a body or an answer to read; refreshes the description.
    async fn act(&self, path: &str) -> Result<()> {
        self.api.must(Method::POST, path, None).await?;
        self.refresh().await?;
        Ok(())
    }
}

impl Cluster for AttachedCluster {
    fn endpoints(&self) -> Endpoints {
        let info = self.lock();
        let cells: Vec<CellId> = info.cells.iter().map(|c| c.id).collect();
        Endpoints {
            router_url: info.router.url.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {}", info.token),
            proxied_cells: info
                .local_api
                .as_ref()
                .map(|a| a.proxied_cells.clone())
                .unwrap_or_default(),
            // The launcher's layout also remembers removed cells' ids.
            next_cell_id: match LocalLayout::load(&info.dir) {
                Ok(Some(l)) => l.next_cell_id(),
                _ => next_free_id(cells.iter().map(|c| c.0).max().unwrap_or(0)),
            },
            cells,
        }
    }

    fn admin(&self) -> Result<AdminClient> {
        let info = self.lock();
        let c = info
            .control
            .as_ref()
            .with_context(|| format!("{} names no control server", self.path.display()))?;
        Ok(AdminClient::new(&c.url, &c.admin_token))
    }

    fn add_cell(&mut self, id: CellId) -> Fut<'_, CellSpec> {
        Box::pin(async move {
            let r: AddCellResponse = self
                .post(
                    Method::POST,
                    "/v1/cells",
                    Some(&AddCellRequest { id: Some(id.0) }),
                )
                .await?;
            self.refresh().await?;
            Ok(r.cell)
        })
    }

    fn kill_leader(&self, cell: CellId) -> Fut<'_, usize> {
        Box::pin(async move {
            let r: KillLeaderResponse = self
                .post::<(), _>(Method::POST, &format!("/v1/cells/{cell}/kill-leader"), None)
                .await?;
            self.refresh().await?;
            Ok(r.replica)
        })
    }

    fn kill_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move { self.act(&format!("/v1/cells/{cell}/kill")).await })
    }

    fn restart_replica(&self, cell: CellId, i: usize) -> Fut<'_, ()> {
        Box::pin(async move {
            self.act(&format!("/v1/cells/{cell}/replicas/{i}/restart"))
                .await
        })
    }

    fn restart_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move { self.act(&format!("/v1/cells/{cell}/restart")).await })
    }

    fn freeze_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move { self.act(&format!("/v1/cells/{cell}/freeze")).await })
    }

    fn thaw_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move { self.act(&format!("/v1/cells/{cell}/thaw")).await })
    }

    fn set_cell_delay(&self, cell: CellId, round_trip: Duration) -> Fut<'_, ()> {
        Box::pin(async move {
            let round_trip_ms = u64::try_from(round_trip.as_millis()).unwrap_or(u64::MAX);
            self.post::<_, serde_json::Value>(
                Method::PUT,
                &format!("/v1/cells/{cell}/delay"),
                Some(&SetDelayRequest { round_trip_ms }),
            )
            .await?;
            Ok(())
        })
    }

    fn stop_router(&self) -> Fut<'_, ()> {
        Box::pin(async move { self.act("/v1/router/stop").await })
    }

    fn start_router(&self) -> Fut<'_, ()> {
        Box::pin(async move { self.act("/v1/router/start").await })
    }

    fn warnings(&self) -> Fut<'_, Vec<String>> {
        Box::pin(async move {
            let w: WarningsResponse = self.get("/v1/warnings").await?;
            Ok(w.warnings)
        })
    }
}
