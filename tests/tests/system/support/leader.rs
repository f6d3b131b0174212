//! Finding and following a cell's leader: lookups on a [`LocalCell`], the
//! [`LeaderWriter`] that keeps a write going until a leader acknowledges it
//! (a thin wrapper over `client::cell::CellClient`), and [`HintFollower`],
//! which follows `not_leader` hints only and hands every other answer back.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use client::cell::{CellCallError, CellClient, Retry};
use client::http::{Client, ClientConfig, Resp};
use cluster::cell_proc::LocalCell;
use common::Backoff;
use http::Method;

use super::{obj_path, obj_url, Api};

/// Index of some follower when replica `leader` leads (of three).
pub fn a_follower(leader: usize) -> usize {
    (leader + 1) % 3
}

/// The API base URL of the replica that leads, waiting up to `within` for one.
pub async fn must_leader_url(cell: &LocalCell, within: Duration) -> String {
    let l = cell
        .wait_for_leader(within)
        .await
        .unwrap_or_else(|e| panic!("no leader of cell {}: {e:#}", cell.cell_id()));
    cell.replica(l).api_url()
}

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub bucket: String,
    pub key: String,
    pub value: Bytes,
    pub etag: String,
    pub version: u64,
    /// Base URL of the replica that acknowledged it.
    pub by: String,
    pub at: Instant,
}

/// Pause between two rounds over every replica (constant, as the writer
/// always had: a write to a killed leader must not stall for long).
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Writes through whichever replica leads: a [`CellClient`] with
/// [`Retry::Idempotent`], which follows `421` hints and retries `503`, `504`
/// and connection failures on the next replica. Retrying a PUT whose outcome
/// is unknown is safe here because every retry writes the same value; the
/// acknowledged etag is the latest version.
#[derive(Clone)]
pub struct LeaderWriter {
    cell: CellClient,
}

impl LeaderWriter {
    pub fn new(cell: &LocalCell) -> LeaderWriter {
        // Short: a write to a killed leader must not stall a writer for long.
        let http = Client::new(ClientConfig {
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        });
        LeaderWriter {
            cell: CellClient::new(http, &cell.api_urls(), cell.api_auth())
                .with_backoff(Backoff::new(RETRY_BACKOFF, RETRY_BACKOFF)),
        }
    }

    /// PUTs `value` until a replica acknowledges it or `within` passes.
    pub async fn try_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        within: Duration,
    ) -> Result<Ack> {
        let answered = match self
            .cell
            .call(
                Method::PUT,
                &obj_path(bucket, key),
                &[],
                value.clone(),
                Retry::Idempotent,
                within,
            )
            .await
        {
            Ok(a) => a,
            Err(CellCallError::Unavailable { last, .. }) => {
                bail!("PUT {bucket}/{key} not acknowledged within {within:?}; last failure: {last}")
            }
            Err(e) => bail!("PUT {bucket}/{key}: {e}"),
        };
        let r = &answered.resp;
        if r.status != 200 {
            bail!(
                "PUT {bucket}/{key} on {} answered {}: {}",
                answered.url,
                r.status,
                r.text()
            );
        }
        let s = Api::must_stored(r);
        Ok(Ack {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            value,
            etag: s.etag,
            version: s.version,
            by: answered.url,
            at: Instant::now(),
        })
    }
}

/// Most `not_leader` hops of one request (hints going in circles fail it).
const MAX_HOPS: usize = 4;

/// Sends to the replica it believes leads and follows a `421 not_leader`
/// naming a leader (the request provably did not execute); returns any other
/// answer as it is, and a transport error as an error: nothing is retried.
#[derive(Clone)]
pub struct HintFollower {
    pub api: Api,
    /// Base URL of the replica believed to lead.
    pub leader: String,
}

impl HintFollower {
    /// One request for `bucket/key`, following at most [`MAX_HOPS`] hints.
    pub async fn send(
        &mut self,
        method: Method,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<Resp, String> {
        for _ in 0..MAX_HOPS {
            let url = obj_url(&self.leader, bucket, key);
            let auth = [("authorization", self.api.auth.as_str())];
            let r = self
                .api
                .client
                .request(method.clone(), &url, &auth, body.clone())
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            match (r.error_code().as_deref(), r.header("x-cellkv-leader")) {
                (Some("not_leader"), Some(hint)) => self.leader = format!("http://{hint}"),
                _ => return Ok(r),
            }
        }
        Err(format!("{key}: more than {MAX_HOPS} not_leader hops"))
    }
}
