//! Read-backs of acknowledged writes: over HTTP ([`must_read_back`], through
//! whatever the test reads with: the router, a cell's leader) or in a scan
//! ([`assert_acked_present`], [`assert_acked_etags`]).

use std::collections::BTreeSet;
use std::future::Future;

use bytes::Bytes;
use client::http::Resp;
use common::wire::ScanItem;

use super::leader::Ack;
use super::scan_map;

/// One acknowledged write to read back.
#[derive(Clone, Debug)]
pub struct Expect {
    pub key: String,
    /// Unquoted.
    pub etag: String,
    /// The value to compare, if the test knows it.
    pub value: Option<Bytes>,
}

impl From<&Ack> for Expect {
    fn from(a: &Ack) -> Expect {
        Expect {
            key: a.key.clone(),
            etag: a.etag.clone(),
            value: Some(a.value.clone()),
        }
    }
}

/// GETs every expected key with `get` (`parallel` tasks at a time; `get`
/// fails the test itself on a transport error): each must answer 200 with
/// its acknowledged etag (quoted in `ETag`) and, where known, its value.
pub async fn must_read_back<G, Fut>(expected: Vec<Expect>, parallel: usize, get: G)
where
    G: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Resp> + Send,
{
    let mut readers = tokio::task::JoinSet::new();
    for chunk in expected.chunks(expected.len().div_ceil(parallel.max(1)).max(1)) {
        let (get, chunk) = (get.clone(), chunk.to_vec());
        readers.spawn(async move {
            for e in chunk {
                let r = get(e.key.clone()).await;
                assert_eq!(
                    r.status,
                    200,
                    "acknowledged {} is gone: {}",
                    e.key,
                    r.text()
                );
                assert_eq!(
                    r.header("etag"),
                    Some(format!("\"{}\"", e.etag).as_str()),
                    "{} reads back with another etag",
                    e.key
                );
                if let Some(v) = &e.value {
                    assert_eq!(&r.body[..], &v[..], "{}: value differs", e.key);
                }
            }
        });
    }
    while let Some(r) = readers.join_next().await {
        r.expect("a reader task panicked");
    }
}

/// Asserts that every acknowledged write is in `items` with its acknowledged
/// etag and value, and that `items` holds nothing else in `bucket`.
#[track_caller]
pub fn assert_acked_present(acks: &[Ack], items: &[ScanItem], bucket: &str) {
    let found = scan_map(items);
    for a in acks {
        match found.get(&(a.bucket.clone(), a.key.clone())) {
            Some((etag, value)) => {
                assert_eq!(
                    etag, &a.etag,
                    "{}/{}: acknowledged etag lost",
                    a.bucket, a.key
                );
                assert_eq!(
                    &value[..],
                    &a.value[..],
                    "{}/{}: value differs",
                    a.bucket,
                    a.key
                );
            }
            None => panic!(
                "acknowledged write {}/{} (version {}) is missing",
                a.bucket, a.key, a.version
            ),
        }
    }
    let acked: BTreeSet<&str> = acks.iter().map(|a| a.key.as_str()).collect();
    let extra: Vec<_> = found
        .keys()
        .filter(|(b, k)| b == bucket && !acked.contains(k.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "objects nobody wrote successfully: {extra:?}"
    );
}

/// Asserts only that every acknowledged write is in `items` with its
/// acknowledged etag (`where_` names the place in the failure).
#[track_caller]
pub fn assert_acked_etags(acks: &[Ack], items: &[ScanItem], where_: &str) {
    let map = scan_map(items);
    for a in acks {
        assert_eq!(
            map.get(&(a.bucket.clone(), a.key.clone()))
                .map(|v| v.0.as_str()),
            Some(a.etag.as_str()),
            "{} missing {where_}",
            a.key
        );
    }
}
