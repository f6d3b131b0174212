//! S3 listings on top of the native cross-cell listing (`crate::listing`):
//! pages of every cell merged in key order, walked here into S3's shape:
//! keys and, with a delimiter, common prefixes, cut at `max-keys`. A listing
//! that cannot reach a cell fails (503), never returns a short success.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cellkv_s3::xml::ObjectEntry;
use common::wire::ListEntry;

use crate::error::ApiError;
use crate::listing::{self, ListQuery, MAX_LIST_LIMIT};
use crate::proxy::Proxy;
use crate::topology::Topology;

/// Above every character a key can hold after a prefix: `start_after =
/// prefix + SKIP` skips every key under `prefix`.
const SKIP: char = char::MAX;

/// What a listing asks for.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Only keys (and prefixes) after this.
    pub start_after: Option<String>,
    pub max_keys: usize,
}

/// A listing's page in S3's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gathered {
    pub contents: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or prefix returned (V1's NextMarker).
    pub last: Option<String>,
    /// Where the next page starts after (V2's continuation).
    pub next_start_after: Option<String>,
}

/// Walks merged key-ordered entries into keys and common prefixes.
struct Walker<'a> {
    ask: &'a Ask,
    out: Gathered,
    /// The common prefix last emitted: its keys are skipped.
    current_prefix: Option<String>,
    count: usize,
}

enum Step {
    Continue,
    /// `max_keys` reached; `true` when the entry that stopped it was not taken.
    Full,
}

fn entry(e: ListEntry) -> ObjectEntry {
    ObjectEntry {
        key: e.key,
        last_modified: UNIX_EPOCH + Duration::from_millis(e.last_modified_ms),
        etag: e.s3_etag.unwrap_or(e.etag),
        size: e.size,
    }
}

impl<'a> Walker<'a> {
    fn new(ask: &'a Ask) -> Self {
        Walker {
            ask,
            out: Gathered::default(),
            current_prefix: None,
            count: 0,
        }
    }

    /// The common prefix `key` rolls up into, if any.
    fn prefix_of(&self, key: &str) -> Option<String> {
        let d = self.ask.delimiter.as_deref()?;
        let rest = key.strip_prefix(self.ask.prefix.as_str())?;
        let i = rest.find(d)?;
        Some(format!("{}{}", self.ask.prefix, &rest[..i + d.len()]))
    }

    fn push(&mut self, e: ListEntry) -> Step {
        if let Some(p) = &self.current_prefix {
            if e.key.starts_with(p.as_str()) {
                return Step::Continue;
            }
        }
        if self.count >= self.ask.max_keys {
            self.out.is_truncated = true;
            return Step::Full;
        }
        match self.prefix_of(&e.key) {
            Some(p) => {
                self.current_prefix = Some(p.clone());
                // A marker inside (or equal to) this prefix: S3 lists nothing
                // at or before the marker, the prefix included.
                if self
                    .ask
                    .start_after
                    .as_deref()
                    .is_some_and(|m| p.as_str() <= m)
                {
                    return Step::Continue;
                }
                self.out.last = Some(p.clone());
                self.out.next_start_after = Some(format!("{p}{SKIP}"));
                self.out.common_prefixes.push(p);
            }
            None => {
                self.out.last = Some(e.key.clone());
                self.out.next_start_after = Some(e.key.clone());
                self.out.contents.push(entry(e));
            }
        }
        self.count += 1;
        Step::Continue
    }

    /// Where to ask the cells to continue after `last_key` of a page.
    fn resume_after(&self, last_key: &str) -> String {
        match &self.current_prefix {
            Some(p) if last_key.starts_with(p.as_str()) => format!("{p}{SKIP}"),
            _ => last_key.to_string(),
        }
    }
}

/// Gathers one S3 page from every cell of `topo`.
pub async fn gather(
    proxy: &Arc<Proxy>,
    topo: &Arc<Topology>,
    bucket: &str,
    ask: &Ask,
) -> Result<Gathered, ApiError> {
    let mut w = Walker::new(ask);
    if ask.max_keys == 0 {
        return Ok(w.out);
    }
    let mut start_after = ask
        .start_after
        .clone()
        .filter(|s| s.as_str() >= ask.prefix.as_str());
    loop {
        let q = ListQuery {
            prefix: ask.prefix.clone(),
            start_after: start_after.clone(),
            limit: Some(MAX_LIST_LIMIT),
            allow_partial: false,
        };
        let page = listing::list(proxy.clone(), topo.clone(), bucket, &q).await?;
        let last_key = page.objects.last().map(|e| e.key.clone());
        for e in page.objects {
            if let Step::Full = w.push(e) {
                return Ok(w.out);
            }
        }
        match (page.next_start_after, last_key) {
            (Some(_), Some(last)) => start_after = Some(w.resume_after(&last)),
            _ => return Ok(w.out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str) -> ListEntry {
        ListEntry {
            key: key.into(),
            size: 1,
            etag: "x".into(),
            last_modified_ms: 0,
            s3_etag: None,
        }
    }

    fn walk(ask: &Ask, keys: &[&str]) -> Gathered {
        let mut w = Walker::new(ask);
        for k in keys {
            if let Step::Full = w.push(e(k)) {
                break;
            }
        }
        w.out
    }

    fn names(g: &Gathered) -> Vec<&str> {
        g.contents.iter().map(|o| o.key.as_str()).collect()
    }

    #[test]
    fn delimiter_rolls_keys_into_prefixes() {
        let ask = Ask {
            prefix: "photos/".into(),
            delimiter: Some("/".into()),
            max_keys: 1000,
            ..Ask::default()
        };
        let g = walk(
            &ask,
            &[
                "photos/2024/x.jpg",
                "photos/2024/y.jpg",
                "photos/a.jpg",
                "photos/b.jpg",
            ],
        );
        assert_eq!(names(&g), ["photos/a.jpg", "photos/b.jpg"]);
        assert_eq!(g.common_prefixes, ["photos/2024/"]);
        assert!(!g.is_truncated);
    }

    #[test]
    fn max_keys_counts_prefixes_and_truncates() {
        let ask = Ask {
            delimiter: Some("/".into()),
            max_keys: 2,
            ..Ask::default()
        };
        let g = walk(&ask, &["a/1", "a/2", "b", "c/1", "d"]);
        assert_eq!(g.common_prefixes, ["a/"]);
        assert_eq!(names(&g), ["b"]);
        assert!(g.is_truncated);
        assert_eq!(g.last.as_deref(), Some("b"));
        // Ending on a prefix: the next page starts past all its keys.
        let ask1 = Ask {
            max_keys: 1,
            ..ask.clone()
        };
        let g = walk(&ask1, &["a/1", "a/2", "b"]);
        assert_eq!(g.next_start_after, Some(format!("a/{SKIP}")));
        assert!(g.is_truncated);
        // Only keys under the last prefix remain: not truncated.
        let g = walk(&ask1, &["a/1", "a/2"]);
        assert!(!g.is_truncated);
    }

    #[test]
    fn a_marker_at_a_prefix_skips_it() {
        let ask = Ask {
            delimiter: Some("/".into()),
            start_after: Some("a/".into()),
            max_keys: 10,
            ..Ask::default()
        };
        let g = walk(&ask, &["a/1", "a/2", "b"]);
        assert!(g.common_prefixes.is_empty());
        assert_eq!(names(&g), ["b"]);
    }

    #[test]
    fn multi_character_delimiters() {
        let ask = Ask {
            delimiter: Some("--".into()),
            max_keys: 10,
            ..Ask::default()
        };
        let g = walk(&ask, &["a--b--c", "a-b", "x"]);
        assert_eq!(g.common_prefixes, ["a--"]);
        assert_eq!(names(&g), ["a-b", "x"]);
    }
}
