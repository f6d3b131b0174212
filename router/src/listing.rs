//! Bucket listings: a bucket's keys are spread over every cell, so a listing
//! asks every cell in parallel for its first `limit` keys after `start_after`
//! and merges them. The merge is exact for the cells that answered (the first
//! `limit` keys overall are among each cell's first `limit`), but the pages
//! are read at different moments: a listing is not a snapshot across cells.
//! During a range hand-over two cells may list the same key for an instant;
//! the merge keeps one entry per key.

use std::sync::Arc;

use bytes::Bytes;
use common::wire::{ListEntry, ListPage};
use common::{CellId, ErrorCode};
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::error::ApiError;
use crate::proxy::Proxy;
use crate::request::{percent_encode, CellRequest, Op};
use crate::topology::Topology;

/// Most keys in one page (the cells' own maximum).
pub const MAX_LIST_LIMIT: usize = 1000;

/// Query of `GET /v1/buckets/{bucket}/objects`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: Option<usize>,
    /// Answer 200 with what the available cells hold instead of 503.
    #[serde(default)]
    pub allow_partial: bool,
}

/// The public listing page: the cell page plus whether cells were missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterListPage {
    pub objects: Vec<ListEntry>,
    /// Pass as `start_after` for the next page; absent on the last page.
    pub next_start_after: Option<String>,
    /// True when some cells could not be asked (only with `allow_partial=true`).
    pub partial: bool,
    /// The cells whose keys are missing from this page.
    pub missing_cells: Vec<CellId>,
}

/// Merges the cells' pages: sorted by key, one entry per key (the newest if
/// two cells hold the same key, as during a move), cut to `limit`.
/// `next_start_after` is set when keys remain in any cell.
pub fn merge(pages: Vec<ListPage>, limit: usize, missing_cells: Vec<CellId>) -> RouterListPage {
    let any_more = pages.iter().any(|p| p.next_start_after.is_some());
    let min_next = pages
        .iter()
        .filter_map(|p| p.next_start_after.clone())
        .min();
    let mut all: Vec<ListEntry> = pages.into_iter().flat_map(|p| p.objects).collect();
    all.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(b.last_modified_ms.cmp(&a.last_modified_ms))
    });
    all.dedup_by(|later, first| later.key == first.key);
    let truncated = all.len() > limit;
    all.truncate(limit);
    let next_start_after = if truncated || any_more {
        // A cell with more keys returned `limit` of them, so `all` is full
        // unless that cell misbehaved; then resume from its own cursor.
        all.last().map(|e| e.key.clone()).or(min_next)
    } else {
        None
    };
    RouterListPage {
        objects: all,
        next_start_after,
        partial: !missing_cells.is_empty(),
        missing_cells,
    }
}

impl ListQuery {
    /// The page size, checked against `MAX_LIST_LIMIT`.
    pub fn checked_limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(MAX_LIST_LIMIT);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("limit must be between 1 and {MAX_LIST_LIMIT}"),
            ));
        }
        for (name, v) in [
            ("prefix", Some(&self.prefix)),
            ("start_after", self.start_after.as_ref()),
        ] {
            if v.is_some_and(|v| v.len() > common::names::MAX_KEY_BYTES) {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "{name} is longer than {} bytes",
                        common::names::MAX_KEY_BYTES
                    ),
                ));
            }
        }
        Ok(limit)
    }

    /// The cell API path and query asking for one page.
    pub fn cell_path(&self, bucket: &str, limit: usize) -> String {
        let mut p = format!(
            "/v1/buckets/{}/objects?limit={limit}&prefix={}",
            percent_encode(bucket, false),
            percent_encode(&self.prefix, false)
        );
        if let Some(sa) = &self.start_after {
            p.push_str("&start_after=");
            p.push_str(&percent_encode(sa, false));
        }
        p
    }
}

/// What asking one cell produced.
enum CellPage {
    Page(ListPage),
    /// The cell is unavailable (its keys are missing).
    Missing(String),
    /// The cell refused the request itself (a client error every cell would give).
    Refused(ApiError),
}

async fn ask(proxy: &Proxy, topo: &Topology, id: CellId, req: &CellRequest) -> CellPage {
    match proxy.forward(topo, id, req).await {
        Ok(resp) if resp.status == StatusCode::OK => {
            match serde_json::from_slice::<ListPage>(&resp.body) {
                Ok(page) => CellPage::Page(page),
                Err(e) => CellPage::Missing(format!("unreadable listing page: {e}")),
            }
        }
        Ok(resp) if resp.status.is_client_error() => {
            CellPage::Refused(ApiError::from_cell(id, resp.status, &resp.body))
        }
        Ok(resp) => CellPage::Missing(format!("answered {}", resp.status)),
        Err(e) => CellPage::Missing(e.to_string()),
    }
}

/// Lists `bucket` across every cell of `topo` that may hold keys (all but
/// `empty` ones). Fails with 503 `cell_unavailable` naming the missing
/// cells unless `allow_partial`.
pub async fn list(
    proxy: Arc<Proxy>,
    topo: Arc<Topology>,
    bucket: &str,
    q: &ListQuery,
) -> Result<RouterListPage, ApiError> {
    let limit = q.checked_limit()?;
    let req = Arc::new(CellRequest {
        op: Op::List,
        method: Method::GET,
        path_and_query: q.cell_path(bucket, limit),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    });
    // Dropping the set (client gone) aborts the outstanding cell requests.
    let mut set = JoinSet::new();
    for cell in topo.listed_cells() {
        let (proxy, topo, req, id) = (proxy.clone(), topo.clone(), req.clone(), cell.id);
        set.spawn(async move { (id, ask(&proxy, &topo, id, &req).await) });
    }
    let mut pages = Vec::new();
    let mut missing: Vec<(CellId, String)> = Vec::new();
    let mut refused = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, CellPage::Page(p))) => pages.push(p),
            Ok((id, CellPage::Missing(why))) => missing.push((id, why)),
            Ok((_, CellPage::Refused(e))) => refused = refused.or(Some(e)),
            Err(e) => tracing::error!("failed to join a listing task: {e}"),
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    missing.sort_by_key(|(id, _)| *id);
    let missing_ids: Vec<CellId> = missing.iter().map(|(id, _)| *id).collect();
    if !missing.is_empty() && !q.allow_partial {
        let detail: Vec<String> = missing
            .iter()
            .map(|(id, why)| format!("cell {id}: {why}"))
            .collect();
        let mut e = ApiError::new(
            ErrorCode::CellUnavailable,
            format!(
                "cannot list every cell ({}); retry, or pass allow_partial=true to list the others",
                detail.join("; ")
            ),
        );
        e.missing_cells = missing_ids;
        return Err(e);
    }
    Ok(merge(pages, limit, missing_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, modified: u64) -> ListEntry {
        ListEntry {
            key: key.into(),
            size: 1,
            etag: format!("e-{key}-{modified}"),
            last_modified_ms: modified,
            s3_etag: None,
        }
    }

    fn page(keys: &[&str], next: Option<&str>) -> ListPage {
        ListPage {
            objects: keys.iter().map(|k| entry(k, 1)).collect(),
            next_start_after: next.map(String::from),
        }
    }

    fn keys(p: &RouterListPage) -> Vec<&str> {
        p.objects.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn merges_sorted_and_cuts_to_limit() {
        let pages = vec![
            page(&["a", "d", "g"], Some("g")),
            page(&["b", "c"], None),
            page(&["e"], None),
        ];
        let m = merge(pages, 3, vec![]);
        assert_eq!(keys(&m), ["a", "b", "c"]);
        assert_eq!(m.next_start_after.as_deref(), Some("c"));
        assert!(!m.partial && m.missing_cells.is_empty());
    }

    #[test]
    fn last_page_has_no_cursor() {
        let m = merge(vec![page(&["b"], None), page(&["a", "c"], None)], 3, vec![]);
        assert_eq!(keys(&m), ["a", "b", "c"]);
        assert_eq!(m.next_start_after, None);
        let m = merge(vec![page(&[], None), page(&[], None)], 10, vec![]);
        assert!(m.objects.is_empty() && m.next_start_after.is_none());
    }

    #[test]
    fn a_full_cell_means_more_even_without_truncation() {
        // One cell returned exactly `limit` keys and says it has more.
        let m = merge(
            vec![page(&["a", "b"], Some("b")), page(&[], None)],
            2,
            vec![],
        );
        assert_eq!(keys(&m), ["a", "b"]);
        assert_eq!(m.next_start_after.as_deref(), Some("b"));
        // A misbehaving cell with a cursor but no keys still leaves a cursor.
        let m = merge(vec![page(&[], Some("k"))], 2, vec![]);
        assert_eq!(m.next_start_after.as_deref(), Some("k"));
    }

    #[test]
    fn byte_order_and_duplicates() {
        let mut p1 = page(&["B", "a", "é"], None);
        p1.objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut p2 = page(&["a"], None);
        p2.objects[0].last_modified_ms = 5;
        let m = merge(vec![p1, p2], 10, vec![]);
        assert_eq!(keys(&m), ["B", "a", "é"]);
        assert_eq!(
            m.objects[1].last_modified_ms, 5,
            "the newest copy of a duplicated key wins"
        );
    }

    #[test]
    fn a_key_listed_by_two_cells_appears_once() {
        // During a hand-over the old and the new owner both list "m".
        let p1 = page(&["a", "m", "z"], None);
        let p2 = page(&["m", "n"], None);
        let m = merge(vec![p1, p2], 10, vec![]);
        assert_eq!(keys(&m), ["a", "m", "n", "z"]);
        // The duplicate does not use up the page: the limit counts distinct keys.
        let m = merge(
            vec![page(&["a", "m"], Some("m")), page(&["m", "n"], Some("n"))],
            2,
            vec![],
        );
        assert_eq!(keys(&m), ["a", "m"]);
        assert_eq!(m.next_start_after.as_deref(), Some("m"));
        let m = merge(
            vec![page(&["m", "n"], None), page(&["m", "n"], None)],
            3,
            vec![],
        );
        assert_eq!(keys(&m), ["m", "n"]);
        assert_eq!(m.next_start_after, None);
    }

    #[test]
    fn partial_marker() {
        let m = merge(vec![page(&["a"], None)], 10, vec![CellId(2), CellId(5)]);
        assert!(m.partial);
        assert_eq!(m.missing_cells, vec![CellId(2), CellId(5)]);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["partial"], true);
        assert_eq!(v["missing_cells"], serde_json::json!([2, 5]));
    }

    #[test]
    fn query_checks_and_cell_path() {
        let q = ListQuery::default();
        assert_eq!(q.checked_limit().unwrap(), 1000);
        for bad in [0, 1001] {
            let q = ListQuery {
                limit: Some(bad),
                ..ListQuery::default()
            };
            assert_eq!(q.checked_limit().unwrap_err().code, ErrorCode::BadRequest);
        }
        let q = ListQuery {
            prefix: "a b/".into(),
            start_after: Some("a b/é".into()),
            limit: Some(5),
            allow_partial: false,
        };
        assert_eq!(
            q.cell_path("my-bucket", 5),
            "/v1/buckets/my-bucket/objects?limit=5&prefix=a%20b%2F&start_after=a%20b%2F%C3%A9"
        );
        let long = ListQuery {
            prefix: "k".repeat(1025),
            ..ListQuery::default()
        };
        assert!(long.checked_limit().is_err());
    }
}
