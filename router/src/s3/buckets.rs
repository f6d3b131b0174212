//! `BucketRegistry`: which S3 buckets exist. One JSON document in the
//! control cell (bucket `cellkv-control`, key `s3-buckets`), replicated by
//! its Raft group like the cell map; each router caches it, polls it every
//! `control.poll_interval` (a GET with `If-None-Match`: 304 when unchanged)
//! and writes it only with a condition on its etag, so concurrent
//! CreateBucket/DeleteBucket calls on any routers serialize in the control
//! cell's log (ADR 0023).
//!
//! Without `[control]` there is no registry: every valid bucket name exists
//! (as in the native API), CreateBucket records nothing, and ListBuckets is
//! empty.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cell_client::{error_chain, HttpClient};
use crate::config::ControlConfig;
use crate::error::HEADER_LEADER;
use crate::map_watch::CONTROL_BUCKET;

/// The registry's key in the control cell's `cellkv-control` bucket.
pub const BUCKETS_KEY: &str = "s3-buckets";
/// Largest registry document read (about 10,000 buckets of 60 bytes each).
const REGISTRY_MAX_BYTES: usize = 4 << 20;
/// Conditional writes tried before a create or delete gives up under contention.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// One bucket as the registry records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// The registry document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDoc {
    pub buckets: BTreeMap<String, BucketRecord>,
}

/// Why the registry could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the control cell is unreachable: {0}")]
    Unreachable(String),
    #[error("the bucket registry in the control cell is unreadable: {0}")]
    Corrupt(String),
    #[error("the bucket registry changed {MAX_WRITE_ATTEMPTS} times during the update")]
    Contended,
}

/// What a create or delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    /// Create: it exists already. Delete: it did not exist.
    Unchanged,
}

/// The control cell's key-value API, just enough for one JSON document.
struct ControlStore {
    cfg: ControlConfig,
    http: HttpClient,
    auth: HeaderValue,
}

/// One control cell answer.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Bytes,
}

impl ControlStore {
    /// Sends one request, trying the endpoints in turn and following a
    /// `not_leader` hint to a listed endpoint.
    async fn call(
        &self,
        method: Method,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
    ) -> Result<Answer, RegistryError> {
        let n = self.cfg.endpoints.len();
        let mut idx = 0;
        let mut last = String::from("no endpoint");
        for _ in 0..n + 2 {
            let ep = &self.cfg.endpoints[idx];
            let uri = format!("http://{ep}/v1/buckets/{CONTROL_BUCKET}/objects/{BUCKETS_KEY}");
            let mut b = http::Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(http::header::AUTHORIZATION, self.auth.clone());
            for (k, v) in headers {
                b = b.header(k, v);
            }
            let req = match b.body(Full::new(body.clone())) {
                Ok(r) => r,
                Err(e) => return Err(RegistryError::Unreachable(e.to_string())),
            };
            let exchange = async {
                let resp = self
                    .http
                    .request(req)
                    .await
                    .map_err(|e| format!("ask {ep}: {}", error_chain(&e)))?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, REGISTRY_MAX_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("read from {ep}: {e}"))?
                    .to_bytes();
                Ok::<_, String>((parts, body))
            };
            match tokio::time::timeout(self.cfg.request_timeout, exchange).await {
                Ok(Ok((parts, body))) => {
                    if parts.status == StatusCode::MISDIRECTED_REQUEST
                        || parts.status == StatusCode::SERVICE_UNAVAILABLE
                    {
                        last = format!("{ep} answered {}", parts.status);
                        let hint = parts
                            .headers
                            .get(HEADER_LEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|a| self.cfg.endpoints.iter().position(|e| e == a));
                        idx = hint.filter(|&h| h != idx).unwrap_or((idx + 1) % n);
                        continue;
                    }
                    return Ok(Answer {
                        status: parts.status,
                        etag: parts
                            .headers
                            .get(http::header::ETAG)
                            .and_then(|v| v.to_str().ok())
                            .map(|e| e.trim_matches('"').to_string()),
                        body,
                    });
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{ep} did not answer in time"),
            }
            idx = (idx + 1) % n;
        }
        Err(RegistryError::Unreachable(last))
    }

    /// The document and its etag; `None` when none was stored yet.
    /// With `known`, a 304 answer is `Ok(Some(None))`: unchanged.
    async fn get(
        &self,
        known: Option<&str>,
    ) -> Result<Option<Option<(BucketDoc, String)>>, RegistryError> {
        let headers: Vec<_> = known
            .map(|e| (http::header::IF_NONE_MATCH, format!("\"{e}\"")))
            .into_iter()
            .collect();
        let a = self.call(Method::GET, &headers, Bytes::new()).await?;
        match a.status {
            StatusCode::NOT_MODIFIED => Ok(Some(None)),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let doc: BucketDoc = serde_json::from_slice(&a.body)
                    .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                Ok(Some(Some((doc, a.etag.unwrap_or_default()))))
            }
            s => Err(RegistryError::Unreachable(format!(
                "the control cell answered {s}"
            ))),
        }
    }

    /// Writes the document if its etag is still `etag` (absent: `None`).
    /// `Ok(None)`: the condition failed.
    async fn put(
        &self,
        doc: &BucketDoc,
        etag: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        let cond = match etag {
            Some(e) => (http::header::IF_MATCH, format!("\"{e}\"")),
            None => (http::header::IF_NONE_MATCH, "*".to_string()),
        };
        let body = serde_json::to_vec(doc).expect("a bucket document always encodes");
        let headers = [
            cond,
            (http::header::CONTENT_TYPE, "application/json".to_string()),
        ];
        let a = self.call(Method::PUT, &headers, body.into()).await?;
        match a.status {
            StatusCode::OK => Ok(Some(a.etag.unwrap_or_default())),
            StatusCode::PRECONDITION_FAILED => Ok(None),
            s => Err(RegistryError::Unreachable(format!(
                "the control cell answered {s} to a write"
            ))),
        }
    }
}

/// The cached registry and the way to change it.
pub struct BucketRegistry {
    store: Option<ControlStore>,
    /// The last document read, and its etag. A std RwLock: readers clone
    /// the Arc, never held across an await.
    cache: RwLock<Arc<(BucketDoc, Option<String>)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl BucketRegistry {
    /// A registry in the control cell of `control`, or none.
    pub fn new(control: Option<&ControlConfig>, http: HttpClient) -> BucketRegistry {
        let store = control.map(|c| {
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", c.token))
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
            auth.set_sensitive(true);
            ControlStore {
                cfg: c.clone(),
                http,
                auth,
            }
        });
        BucketRegistry {
            store,
            cache: RwLock::new(Arc::new((BucketDoc::default(), None))),
        }
    }

    /// Whether buckets are recorded at all (a `[control]` section).
    pub fn is_recorded(&self) -> bool {
        self.store.is_some()
    }

    fn cached(&self) -> Arc<(BucketDoc, Option<String>)> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, doc: BucketDoc, etag: Option<String>) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Arc::new((doc, etag));
    }

    /// The record of `bucket` in the cache.
    pub fn get_cached(&self, bucket: &str) -> Option<BucketRecord> {
        self.cached().0.buckets.get(bucket).cloned()
    }

    /// Every recorded bucket, by name.
    pub fn all(&self) -> Vec<(String, BucketRecord)> {
        self.cached()
            .0
            .buckets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Reads the document again (unless unchanged) into the cache.
    pub async fn refresh(&self) -> Result<(), RegistryError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let known = self.cached().1.clone();
        match store.get(known.as_deref()).await? {
            None => self.set(BucketDoc::default(), None),
            Some(None) => {}
            Some(Some((doc, etag))) => self.set(doc, Some(etag)),
        }
        Ok(())
    }

    /// Whether `bucket` is recorded: the cache, then (on a miss) the control
    /// cell once, so a bucket just created through another router is found.
    /// Without a registry every bucket exists.
    pub async fn exists(&self, bucket: &str) -> Result<bool, RegistryError> {
        if self.store.is_none() || self.get_cached(bucket).is_some() {
            return Ok(true);
        }
        self.refresh().await?;
        Ok(self.get_cached(bucket).is_some())
    }

    /// Applies `change` to the freshest document with a conditional write,
    /// retrying when another writer got there first.
    async fn update(
        &self,
        change: impl Fn(&mut BucketDoc) -> Change,
    ) -> Result<Change, RegistryError> {
        let Some(store) = &self.store else {
            return Ok(Change::Done);
        };
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (mut doc, etag) = match store.get(None).await? {
                Some(Some((d, e))) => (d, Some(e)),
                _ => (BucketDoc::default(), None),
            };
            if change(&mut doc) == Change::Unchanged {
                self.set(doc, etag);
                return Ok(Change::Unchanged);
            }
            if let Some(new_etag) = store.put(&doc, etag.as_deref()).await? {
                self.set(doc, Some(new_etag));
                return Ok(Change::Done);
            }
        }
        Err(RegistryError::Contended)
    }

    /// Records `bucket`; `Unchanged` if it was recorded already.
    pub async fn create(&self, bucket: &str) -> Result<Change, RegistryError> {
        let created_ms = now_ms();
        self.update(|doc| {
            if doc.buckets.contains_key(bucket) {
                return Change::Unchanged;
            }
            doc.buckets
                .insert(bucket.to_string(), BucketRecord { created_ms });
            Change::Done
        })
        .await
    }

    /// Forgets `bucket`; `Unchanged` if it was not recorded.
    pub async fn delete(&self, bucket: &str) -> Result<Change, RegistryError> {
        self.update(|doc| match doc.buckets.remove(bucket) {
            Some(_) => Change::Done,
            None => Change::Unchanged,
        })
        .await
    }

    /// Polls the document every `interval` until `stop`; failures keep the
    /// last cache (logged once per outage).
    pub async fn run(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        if self.store.is_none() {
            return;
        }
        let mut failing = false;
        loop {
            match self.refresh().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("bucket registry readable again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("failed to refresh the S3 bucket registry ({e}); serving with the last one");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_format() {
        let mut doc = BucketDoc::default();
        doc.buckets
            .insert("photos".into(), BucketRecord { created_ms: 5 });
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(text, r#"{"buckets":{"photos":{"created_ms":5}}}"#);
        assert_eq!(serde_json::from_str::<BucketDoc>(&text).unwrap(), doc);
    }
}
