//! `ControlStore`: the client of the control cell (bucket `cellkv-control`):
//! linearizable reads, conditional writes, the cell map's read-modify-CAS
//! loop, job records and the job lease. Finds the control cell's leader by
//! following `not_leader` hints and moving on from unreachable replicas.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::wire::ListPage;
use common::{CellMap, ErrorCode};
use http::{HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::http::{bearer, encode_query, HttpClient, Reply, TransportError};

pub const BUCKET: &str = "cellkv-control";
pub const MAP_KEY: &str = "cell-map";
pub const LEASE_KEY: &str = "lease";
pub const JOB_PREFIX: &str = "jobs/";

/// The control-store key of job `id`.
pub fn job_key(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// Most CAS attempts of one map change before giving up (heavy contention).
const MAX_CAS_ATTEMPTS: usize = 30;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("control cell unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its outcome is unknown (timeout, broken connection).
    #[error("control cell write outcome unknown: {0}")]
    Unknown(String),
    #[error("control cell refused: {0}")]
    Refused(String),
    #[error("stored value {key} is not valid: {msg}")]
    Corrupt { key: String, msg: String },
    #[error("the map changed under {0} attempts in a row; retry")]
    Contention(usize),
    #[error("the control store holds no cell map yet (configure initial_map)")]
    NoMap,
}

/// The condition of a PUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    None,
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: "<etag>"`.
    Match(String),
}

/// What a conditional PUT did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Stored {
        etag: String,
    },
    /// 412: the condition did not hold.
    Conflict,
}

pub struct ControlStore {
    http: HttpClient,
    endpoints: Vec<String>,
    token: String,
    /// The endpoint believed to lead (an address from a hint or the config).
    /// A std mutex: never held across an await.
    leader: Mutex<Option<String>>,
    timeout: Duration,
}

impl ControlStore {
    pub fn new(
        http: HttpClient,
        endpoints: Vec<String>,
        token: String,
        timeout: Duration,
    ) -> ControlStore {
        ControlStore {
            http,
            endpoints,
            token,
            leader: Mutex::new(None),
            timeout,
        }
    }

    fn object_path(key: &str) -> String {
        format!("/v1/buckets/{BUCKET}/objects/{key}")
    }

    /// Sends a request to the control cell's leader, following hints and
    /// trying other replicas, within `self.timeout`. Answers are returned as
    /// they are except the retryable ones (not_leader, no_leader, shutting_down).
    async fn call(
        &self,
        method: Method,
        path: &str,
        extra: Vec<(http::header::HeaderName, HeaderValue)>,
        body: Bytes,
        is_write: bool,
    ) -> Result<Reply, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut headers = vec![bearer(&self.token)];
        headers.extend(extra);
        let order = self.endpoints.clone();
        let mut next: Option<String> = self.leader.lock().expect("leader lock").clone();
        let mut idx = 0usize;
        let mut failed = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(last));
            }
            let addr = match next.take() {
                Some(a) => a,
                None => {
                    idx += 1;
                    order[(idx - 1) % order.len()].clone()
                }
            };
            let left = deadline - now;
            match self
                .http
                .send(method.clone(), &addr, path, &headers, body.clone(), left)
                .await
            {
                Ok(r) if r.status == StatusCode::MISDIRECTED_REQUEST => {
                    let hint = r.error().and_then(|b| {
                        (b.error.code == ErrorCode::NotLeader)
                            .then_some(b.error.leader)
                            .flatten()
                    });
                    last = r.describe();
                    if let Some(h) = hint.filter(|h| h.api_addr != addr) {
                        *self.leader.lock().expect("leader lock") = Some(h.api_addr.clone());
                        next = Some(h.api_addr);
                        continue;
                    }
                }
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    last = r.describe();
                }
                Ok(r) => {
                    *self.leader.lock().expect("leader lock") = Some(addr);
                    return Ok(r);
                }
                Err(TransportError::Connect { msg, .. }) => {
                    last = format!("{addr}: {msg}");
                    *self.leader.lock().expect("leader lock") = None;
                }
                Err(e) => {
                    if is_write {
                        return Err(StoreError::Unknown(e.to_string()));
                    }
                    last = e.to_string();
                    *self.leader.lock().expect("leader lock") = None;
                }
            }
            failed += 1;
            if failed.is_multiple_of(order.len()) {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// Linearizable read of `key`: its value and etag, or None.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        let r = self
            .call(
                Method::GET,
                &Self::object_path(key),
                vec![],
                Bytes::new(),
                false,
            )
            .await?;
        match r.status {
            StatusCode::OK => {
                let etag = etag_of(&r);
                Ok(Some((r.body, etag)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(StoreError::Refused(format!("GET {key}: {}", r.describe()))),
        }
    }

    /// PUT `key` under `cond`.
    pub async fn put(&self, key: &str, value: Bytes, cond: Cond) -> Result<PutOutcome, StoreError> {
        let mut extra = vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        match &cond {
            Cond::None => {}
            Cond::Absent => {
                extra.push((http::header::IF_NONE_MATCH, HeaderValue::from_static("*")))
            }
            Cond::Match(e) => extra.push((
                http::header::IF_MATCH,
                HeaderValue::from_str(&format!("\"{e}\""))
                    .map_err(|e| StoreError::Refused(format!("bad etag: {e}")))?,
            )),
        }
        let r = self
            .call(Method::PUT, &Self::object_path(key), extra, value, true)
            .await?;
        match r.status {
            StatusCode::OK => Ok(PutOutcome::Stored { etag: etag_of(&r) }),
            StatusCode::PRECONDITION_FAILED => Ok(PutOutcome::Conflict),
            StatusCode::GATEWAY_TIMEOUT => {
                Err(StoreError::Unknown(format!("PUT {key}: {}", r.describe())))
            }
            _ => Err(StoreError::Refused(format!("PUT {key}: {}", r.describe()))),
        }
    }

    /// Every key under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!(
                "/v1/buckets/{BUCKET}/objects?prefix={}&limit=1000",
                encode_query(prefix)
            );
            if let Some(a) = &after {
                path.push_str(&format!("&start_after={}", encode_query(a)));
            }
            let r = self
                .call(Method::GET, &path, vec![], Bytes::new(), false)
                .await?;
            if r.status != StatusCode::OK {
                return Err(StoreError::Refused(format!(
                    "list {prefix}: {}",
                    r.describe()
                )));
            }
            let page: ListPage = r.json().map_err(|msg| StoreError::Corrupt {
                key: prefix.to_string(),
                msg,
            })?;
            out.extend(page.objects.into_iter().map(|o| o.key));
            match page.next_start_after {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The stored map and its etag.
    pub async fn load_map(&self) -> Result<Option<(CellMap, String)>, StoreError> {
        let Some((body, etag)) = self.get(MAP_KEY).await? else {
            return Ok(None);
        };
        let map: CellMap = serde_json::from_slice(&body).map_err(|e| StoreError::Corrupt {
            key: MAP_KEY.into(),
            msg: e.to_string(),
        })?;
        Ok(Some((map, etag)))
    }

    pub async fn map(&self) -> Result<CellMap, StoreError> {
        self.load_map()
            .await?
            .map(|(m, _)| m)
            .ok_or(StoreError::NoMap)
    }

    /// Stores `map` only if there is none yet. True if this call stored it.
    pub async fn init_map(&self, map: &CellMap) -> Result<bool, StoreError> {
        let body = serde_json::to_vec(map).expect("a map serializes");
        match self.put(MAP_KEY, body.into(), Cond::Absent).await {
            Ok(PutOutcome::Stored { .. }) => Ok(true),
            Ok(PutOutcome::Conflict) => Ok(false),
            // Unknown outcome: the next read tells.
            Err(StoreError::Unknown(_)) => {
                Ok(self.load_map().await?.is_some_and(|(m, _)| m == *map))
            }
            Err(e) => Err(e),
        }
    }

    /// Read, modify, compare-and-swap with epoch + 1, retried on conflict.
    /// `f` returns Ok(false) when the map needs no change (then nothing is
    /// written), Err to refuse. `f` may run several times: it must be a pure
    /// function of the map it is given. Returns the map as stored.
    pub async fn update_map<E>(
        &self,
        mut f: impl FnMut(&mut CellMap) -> Result<bool, E>,
    ) -> Result<Result<CellMap, E>, StoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (map, etag) = self.load_map().await?.ok_or(StoreError::NoMap)?;
            let mut next = map.clone();
            match f(&mut next) {
                Err(e) => return Ok(Err(e)),
                Ok(false) => return Ok(Ok(map)),
                Ok(true) => {}
            }
            next.epoch = map.epoch + 1;
            next.validate()
                .map_err(|e| StoreError::Refused(format!("the changed map is invalid: {e}")))?;
            let body = serde_json::to_vec(&next).expect("a map serializes");
            match self.put(MAP_KEY, body.into(), Cond::Match(etag)).await {
                Ok(PutOutcome::Stored { .. }) => return Ok(Ok(next)),
                Ok(PutOutcome::Conflict) | Err(StoreError::Unknown(_)) => {
                    // Re-read: if our write did land, `f` finds nothing to change.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention(MAX_CAS_ATTEMPTS))
    }

    /// Reads a JSON record.
    pub async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>, StoreError> {
        let Some((body, etag)) = self.get(key).await? else {
            return Ok(None);
        };
        let v = serde_json::from_slice(&body).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            msg: e.to_string(),
        })?;
        Ok(Some((v, etag)))
    }

    /// Writes a JSON record unconditionally.
    pub async fn put_json<T: Serialize>(&self, key: &str, v: &T) -> Result<(), StoreError> {
        let body = serde_json::to_vec(v).expect("records serialize");
        match self.put(key, body.into(), Cond::None).await? {
            PutOutcome::Stored { .. } => Ok(()),
            PutOutcome::Conflict => Err(StoreError::Refused(format!(
                "unconditional PUT {key} got 412"
            ))),
        }
    }
}

fn etag_of(r: &Reply) -> String {
    r.headers
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_start_matches("W/").trim_matches('"').to_string())
        .unwrap_or_default()
}

/// The job lease record: who may run jobs until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// Tries to take or renew the job lease for `holder`. Ok(Ok(())) when held
/// now, Ok(Err(lease)) when someone else holds it.
pub async fn acquire_lease(
    store: &ControlStore,
    holder: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Result<(), Lease>, StoreError> {
    let current: Option<(Lease, String)> = store.get_json(LEASE_KEY).await?;
    let cond = match &current {
        None => Cond::Absent,
        Some((l, etag)) if l.holder == holder || l.expires_ms < now_ms => Cond::Match(etag.clone()),
        Some((l, _)) => return Ok(Err(l.clone())),
    };
    let lease = Lease {
        holder: holder.to_string(),
        expires_ms: now_ms + ttl.as_millis() as u64,
    };
    let body = serde_json::to_vec(&lease).expect("lease serializes");
    match store.put(LEASE_KEY, body.into(), cond).await? {
        PutOutcome::Stored { .. } => Ok(Ok(())),
        PutOutcome::Conflict => match store.get_json::<Lease>(LEASE_KEY).await? {
            Some((l, _)) if l.holder == holder => Ok(Ok(())),
            Some((l, _)) => Ok(Err(l)),
            None => Ok(Err(Lease {
                holder: "unknown".into(),
                expires_ms: 0,
            })),
        },
    }
}
