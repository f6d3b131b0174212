//! `ControlStore`: the client of the control cell (bucket `cellkv-control`):
//! linearizable reads, conditional writes, the cell map's read-modify-CAS
//! loop, job records and the job lease. Finds the control cell's leader with
//! `client::cell::CellClient`: it follows `not_leader` hints, moves on from
//! unreachable replicas and remembers the leader across calls.

use std::time::Duration;

use bytes::Bytes;
use client::cell::{CellCallError, CellClient, Retry};
use client::http::{Client, Resp};
use common::wire::ListPage;
use common::{Backoff, CellMap};
use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::http::encode_query;

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

/// Wait after every control cell replica failed in a row; doubles up to the cap.
const LEADER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));

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
    /// The control cell's replicas (`endpoints`); remembers its leader.
    cell: CellClient,
    timeout: Duration,
}

impl ControlStore {
    /// `http`'s own request timeout is only a backstop: each call is bounded
    /// by `timeout`.
    pub fn new(
        http: Client,
        endpoints: Vec<String>,
        token: String,
        timeout: Duration,
    ) -> ControlStore {
        ControlStore {
            cell: CellClient::new(http, &endpoints, format!("Bearer {token}"))
                .with_backoff(LEADER_BACKOFF),
            timeout,
        }
    }

    fn object_path(key: &str) -> String {
        format!("/v1/buckets/{BUCKET}/objects/{key}")
    }

    /// Sends a request to the control cell's leader, following hints and
    /// trying other replicas, within `self.timeout`. Answers are returned as
    /// they are except the retryable ones (not_leader, no_leader,
    /// shutting_down). A write is sent at most once: when its outcome is
    /// unknown (broken exchange, timeout) the call ends in `Unknown`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        is_write: bool,
    ) -> Result<Resp, StoreError> {
        let retry = if is_write {
            Retry::AtMostOnce
        } else {
            Retry::Idempotent
        };
        match self
            .cell
            .call(method, path, headers, body, retry, self.timeout)
            .await
        {
            Ok(a) => Ok(a.resp),
            Err(CellCallError::Unavailable { last, .. }) => Err(StoreError::Unavailable(last)),
            Err(CellCallError::Unknown(m)) => Err(StoreError::Unknown(m)),
        }
    }

    /// Linearizable read of `key`: its value and etag, or None.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        let r = self
            .call(
                Method::GET,
                &Self::object_path(key),
                &[],
                Bytes::new(),
                false,
            )
            .await?;
        match r.status {
            200 => {
                let etag = etag_of(&r);
                Ok(Some((r.body, etag)))
            }
            404 => Ok(None),
            _ => Err(StoreError::Refused(format!("GET {key}: {}", r.describe()))),
        }
    }

    /// PUT `key` under `cond`.
    pub async fn put(&self, key: &str, value: Bytes, cond: Cond) -> Result<PutOutcome, StoreError> {
        let if_match;
        let mut headers = vec![("content-type", "application/json")];
        match &cond {
            Cond::None => {}
            Cond::Absent => headers.push(("if-none-match", "*")),
            Cond::Match(e) => {
                if_match = format!("\"{e}\"");
                HeaderValue::from_str(&if_match)
                    .map_err(|e| StoreError::Refused(format!("bad etag: {e}")))?;
                headers.push(("if-match", &if_match));
            }
        }
        let r = self
            .call(Method::PUT, &Self::object_path(key), &headers, value, true)
            .await?;
        match r.status {
            200 => Ok(PutOutcome::Stored { etag: etag_of(&r) }),
            412 => Ok(PutOutcome::Conflict),
            // The cell client ends a write on 504 already; kept for safety.
            504 => Err(StoreError::Unknown(format!("PUT {key}: {}", r.describe()))),
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
                .call(Method::GET, &path, &[], Bytes::new(), false)
                .await?;
            if r.status != 200 {
                return Err(StoreError::Refused(format!(
                    "list {prefix}: {}",
                    r.describe()
                )));
            }
            let page: ListPage = r.json().map_err(|e| StoreError::Corrupt {
                key: prefix.to_string(),
                msg: e.to_string(),
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

fn etag_of(r: &Resp) -> String {
    r.header("etag")
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
