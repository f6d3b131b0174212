//! `ClusterBackend`: the real [`Backend`] of migration jobs — the control
//! store for the map and job records, `CellClient` for the cells (named by
//! id, resolved against the latest map) — plus the job lease state that
//! every job write checks first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ownership::OwnershipOp;
use common::wire::{IngestBatch, IngestResult, RangeStats, ScanPage};
use common::{CellId, CellMap, CellSpec, HashRange};

use crate::cells::{CellClient, CellError, PurgeReply};
use crate::job::{Backend, Job, MapFn, StepError};
use crate::store::{ControlStore, StoreError};

/// Whether this server holds the job lease, as of its last renewal.
#[derive(Debug)]
pub struct LeaseState {
    pub holder: String,
    /// Held until this instant (local clock, with a safety margin). A std
    /// mutex: read and written without awaiting.
    until: Mutex<Option<Instant>>,
    /// Who holds it when we do not (for messages).
    pub other: Mutex<Option<crate::store::Lease>>,
}

impl LeaseState {
    pub fn new(holder: String) -> LeaseState {
        LeaseState {
            holder,
            until: Mutex::new(None),
            other: Mutex::new(None),
        }
    }
    pub fn held(&self) -> bool {
        self.until
            .lock()
            .expect("lease lock")
            .is_some_and(|u| Instant::now() < u)
    }
    /// Records a successful acquisition that started at `asked` for `ttl`:
    /// held locally for three quarters of the ttl from the moment we asked.
    pub fn renewed(&self, asked: Instant, ttl: Duration) {
        *self.until.lock().expect("lease lock") = Some(asked + ttl * 3 / 4);
        *self.other.lock().expect("lease lock") = None;
    }
    pub fn lost(&self, other: Option<crate::store::Lease>) {
        *self.until.lock().expect("lease lock") = None;
        *self.other.lock().expect("lease lock") = other;
    }
}

pub struct ClusterBackend {
    pub store: Arc<ControlStore>,
    pub cells: Arc<CellClient>,
    pub lease: Arc<LeaseState>,
    /// The last map read (to resolve cell ids). A std mutex, never held across an await.
    map: Mutex<Option<CellMap>>,
    /// Latest known state of every job (what the API shows).
    pub jobs: Arc<Mutex<BTreeMap<String, Job>>>,
    pub scan_page_bytes: u64,
    pub purge_chunk: u64,
}

pub fn store_err(e: StoreError) -> StepError {
    match e {
        StoreError::Unavailable(_) | StoreError::Unknown(_) | StoreError::Contention(_) => {
            StepError::Transient(e.to_string())
        }
        StoreError::Refused(_) | StoreError::Corrupt { .. } | StoreError::NoMap => {
            StepError::Operator(e.to_string())
        }
    }
}

pub fn cell_err(e: CellError) -> StepError {
    if e.is_transient() {
        StepError::Transient(e.to_string())
    } else {
        StepError::Operator(e.to_string())
    }
}

impl ClusterBackend {
    pub fn new(
        store: Arc<ControlStore>,
        cells: Arc<CellClient>,
        lease: Arc<LeaseState>,
        jobs: Arc<Mutex<BTreeMap<String, Job>>>,
    ) -> ClusterBackend {
        ClusterBackend {
            store,
            cells,
            lease,
            map: Mutex::new(None),
            jobs,
            scan_page_bytes: 4 << 20,
            purge_chunk: 1000,
        }
    }

    async fn spec(&self, cell: CellId) -> Result<CellSpec, StepError> {
        if let Some(s) = self
            .map
            .lock()
            .expect("map lock")
            .as_ref()
            .and_then(|m| m.cell(cell).cloned())
        {
            return Ok(s);
        }
        let m = self.map().await?;
        m.cell(cell)
            .cloned()
            .ok_or_else(|| StepError::Operator(format!("cell {cell} is not in the map")))
    }
}

impl Backend for ClusterBackend {
    async fn map(&self) -> Result<CellMap, StepError> {
        let m = self.store.map().await.map_err(store_err)?;
        *self.map.lock().expect("map lock") = Some(m.clone());
        Ok(m)
    }

    async fn update_map(&self, f: MapFn) -> Result<CellMap, StepError> {
        if !self.lease.held() {
            return Err(StepError::Stopped);
        }
        let mut f = f;
        let m = self
            .store
            .update_map(|m| Ok::<bool, ()>(f(m)))
            .await
            .map_err(store_err)?
            .map_err(|()| StepError::Operator("map change refused".into()))?;
        *self.map.lock().expect("map lock") = Some(m.clone());
        Ok(m)
    }

    async fn ownership(&self, cell: CellId, op: OwnershipOp) -> Result<(), StepError> {
        if !self.lease.held() {
            return Err(StepError::Stopped);
        }
        let spec = self.spec(cell).await?;
        self.cells.ownership(&spec, &op).await.map_err(cell_err)?;
        Ok(())
    }

    async fn scan(
        &self,
        cell: CellId,
        range: HashRange,
        after: Option<Vec<u8>>,
        values: bool,
    ) -> Result<ScanPage, StepError> {
        let spec = self.spec(cell).await?;
        self.cells
            .scan(
                &spec,
                range,
                after.as_deref(),
                1000,
                self.scan_page_bytes,
                values,
            )
            .await
            .map_err(cell_err)
    }

    async fn ingest(&self, cell: CellId, batch: IngestBatch) -> Result<IngestResult, StepError> {
        if !self.lease.held() {
            return Err(StepError::Stopped);
        }
        let spec = self.spec(cell).await?;
        self.cells.ingest(&spec, &batch).await.map_err(cell_err)
    }

    async fn purge(&self, cell: CellId, range: HashRange) -> Result<PurgeReply, StepError> {
        let spec = self.spec(cell).await?;
        self.cells
            .purge(&spec, range, self.purge_chunk)
            .await
            .map_err(cell_err)
    }

    async fn range_stats(
        &self,
        cell: CellId,
        ranges: Vec<HashRange>,
    ) -> Result<Vec<RangeStats>, StepError> {
        let spec = self.spec(cell).await?;
        self.cells
            .range_stats(&spec, &ranges)
            .await
            .map_err(cell_err)
    }

    async fn save_job(&self, job: &Job) -> Result<(), StepError> {
        if !self.lease.held() {
            return Err(StepError::Stopped);
        }
        self.store
            .put_json(&crate::store::job_key(&job.id), job)
            .await
            .map_err(store_err)?;
        self.jobs
            .lock()
            .expect("jobs lock")
            .insert(job.id.clone(), job.clone());
        Ok(())
    }
}
