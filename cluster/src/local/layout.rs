//! `layout.json`: where every process of a local cluster listens and its
//! secrets, generated once and reused by every later start. Version 2 adds
//! the control plane (a control cell, the control server's admin port and
//! two tokens); a version-1 file (written before the control plane existed)
//! is migrated on load by giving it fresh control ports and secrets, and
//! saved as version 2 by the next start (`v1`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap};
use serde::{Deserialize, Serialize};

use super::write_atomically;
use crate::cell_proc::CellLayout;
use crate::process::free_port;

/// Ports and secrets of a cluster directory.
pub const LAYOUT_FILE: &str = "layout.json";
/// Version of `layout.json` this harness writes; version 1 is migrated on
/// load, any other is refused, never guessed at.
pub const LAYOUT_VERSION: u32 = 2;
/// The control cell's id: an ordinary cell id that no data cell takes (data
/// cells are numbered from 1, and a cell added later skips it).
pub const CONTROL_CELL_ID: CellId = CellId(100);
/// Replicas of the control cell.
pub const CONTROL_REPLICAS: usize = 3;

/// The secrets of a cluster: generated once, persisted, reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// Raft RPC between replicas (every cell, the control cell too).
    pub cluster_secret: String,
    /// Router → cell bearer token (every data cell's `api_token`).
    pub cell_api_token: String,
    /// Every cell's `/admin` token (the control cell's too).
    pub admin_token: String,
    /// The client token of the router (`Authorization: Bearer ...`).
    pub client_token: String,
    /// The control cell's `api_token`: the control server and the router
    /// present it; no client token opens the control cell.
    pub control_cell_token: String,
    /// The control server's admin API token (`cellkvctl`): distinct from
    /// every data token, so a leaked data token does not open it.
    pub control_admin_token: String,
    /// The S3 credential (read-write, every bucket). Empty in a layout
    /// written before S3: generated on its next start.
    #[serde(default)]
    pub s3_access_key: String,
    #[serde(default)]
    pub s3_secret_key: String,
}

impl Secrets {
    /// Fresh, distinct secrets of 40+ characters (32 hex digits from a
    /// randomly seeded hasher over time, pid and a counter; loopback only).
    pub fn generate() -> Secrets {
        Secrets {
            cluster_secret: secret("cluster"),
            cell_api_token: secret("cell-api"),
            admin_token: secret("admin"),
            client_token: secret("client"),
            control_cell_token: secret("control-cell"),
            control_admin_token: secret("control-admin"),
            s3_access_key: s3_access_key(),
            s3_secret_key: secret("s3"),
        }
    }

    /// Fills in what a layout from before S3 lacks; true if anything changed.
    pub fn complete(&mut self) -> bool {
        if self.s3_access_key.is_empty() || self.s3_secret_key.is_empty() {
            self.s3_access_key = s3_access_key();
            self.s3_secret_key = secret("s3");
            return true;
        }
        false
    }
}

/// An access key id shaped like AWS's: 20 upper-case letters and digits.
fn s3_access_key() -> String {
    let hex = secret("x");
    format!("CKV{}", hex[2..19].to_ascii_uppercase())
}

pub(crate) fn secret(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = format!("{prefix}-");
    for _ in 0..2 {
        // `RandomState` is seeded from the OS once per thread and then varies per instance.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The control plane's addresses: the control server's admin API and the
/// control cell's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlLayout {
    pub admin_listen: SocketAddr,
    pub cell: CellLayout,
}

impl ControlLayout {
    /// Fresh loopback ports for the admin API and a 3-replica control cell.
    pub fn allocate() -> Result<ControlLayout> {
        Ok(ControlLayout {
            admin_listen: SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                free_port().context("allocate the control server's port")?,
            )),
            cell: CellLayout::allocate(CONTROL_CELL_ID, CONTROL_REPLICAS)
                .context("allocate the control cell's ports")?,
        })
    }

    /// The control cell replicas' API addresses (the router's and the control
    /// server's endpoints).
    pub fn endpoints(&self) -> Vec<String> {
        self.cell
            .peers
            .iter()
            .map(|p| p.api_addr.to_string())
            .collect()
    }
}

/// Where everything of a cluster listens, and its secrets (`layout.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLayout {
    pub version: u32,
    pub router_listen: SocketAddr,
    /// The router's S3 API. `None` in a layout written before S3: allocated
    /// on its next start.
    #[serde(default)]
    pub s3_listen: Option<SocketAddr>,
    pub secrets: Secrets,
    pub control: ControlLayout,
    /// The data cells, including cells added after the first start.
    pub cells: Vec<CellLayout>,
}

impl LocalLayout {
    /// Cells `1..=cells` of `replicas` replicas each on fresh loopback ports,
    /// the router on `router_port` (or a fresh one), a control plane, fresh secrets.
    pub fn allocate(
        cells: usize,
        replicas: usize,
        router_port: Option<u16>,
    ) -> Result<LocalLayout> {
        if cells == 0 || replicas == 0 {
            bail!("a cluster needs at least one cell of at least one replica");
        }
        if cells >= CONTROL_CELL_ID.0 as usize {
            bail!(
                "at most {} cells: cell id {CONTROL_CELL_ID} is the control cell's",
                CONTROL_CELL_ID.0 - 1
            );
        }
        let port = match router_port {
            Some(p) => p,
            None => free_port().context("allocate the router's port")?,
        };
        let cells = (1..=cells)
            .map(|id| {
                let id = u32::try_from(id).context("too many cells")?;
                CellLayout::allocate(CellId(id), replicas).context("allocate the cells' ports")
            })
            .collect::<Result<_>>()?;
        Ok(LocalLayout {
            version: LAYOUT_VERSION,
            router_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            s3_listen: Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                free_port().context("allocate the S3 port")?,
            ))),
            secrets: Secrets::generate(),
            control: ControlLayout::allocate()?,
            cells,
        })
    }

    /// The layout persisted in `dir`, if there is one (a version-1 file
    /// migrated in memory: [`load_versioned`](Self::load_versioned) says so).
    pub fn load(dir: &Path) -> Result<Option<LocalLayout>> {
        Ok(Self::load_versioned(dir)?.map(|(l, _)| l))
    }

    /// The layout persisted in `dir` and the version of the file.
    pub fn load_versioned(dir: &Path) -> Result<Option<(LocalLayout, u32)>> {
        let path = dir.join(LAYOUT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let parse = || format!("parse {}", path.display());
        let raw: serde_json::Value = serde_json::from_str(&text).with_context(parse)?;
        let version = raw["version"].as_u64().unwrap_or(0);
        match version {
            1 => {
                let old: v1::LocalLayout = serde_json::from_value(raw).with_context(parse)?;
                Ok(Some((old.migrate()?, 1)))
            }
            v if v == u64::from(LAYOUT_VERSION) => {
                let layout: LocalLayout = serde_json::from_value(raw).with_context(parse)?;
                Ok(Some((layout, LAYOUT_VERSION)))
            }
            v => bail!(
                "{} has version {v}; this harness reads versions 1 (migrated) and {LAYOUT_VERSION}: \
                 use a newer cellkv-local, or a new directory",
                path.display()
            ),
        }
    }

    /// Writes `dir/layout.json` (atomically: a crash never leaves half a file).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("serialize the layout")?;
        write_atomically(&dir.join(LAYOUT_FILE), text.as_bytes())
    }

    /// The map the control server starts from (and the router's starting
    /// map): every data cell of the layout active, weight 1, epoch 1, each
    /// replica with its control port.
    pub fn cell_map(&self) -> CellMap {
        CellMap {
            epoch: 1,
            cells: self.cells.iter().map(CellLayout::cell_spec).collect(),
            ..CellMap::default()
        }
    }

    /// The id a cell added now gets: one past the largest data cell id,
    /// skipping the control cell's.
    pub fn next_cell_id(&self) -> CellId {
        let max = self.cells.iter().map(|c| c.cell_id.0).max().unwrap_or(0);
        next_free_id(max)
    }
}

/// The first id after `after` that is not the control cell's.
pub fn next_free_id(after: u32) -> CellId {
    let id = after.saturating_add(1);
    if id == CONTROL_CELL_ID.0 {
        CellId(id + 1)
    } else {
        CellId(id)
    }
}

/// Version 1 of `layout.json`: no control plane.
mod v1 {
    use std::net::SocketAddr;

    use anyhow::Result;
    use serde::Deserialize;

    use super::{secret, ControlLayout, CONTROL_CELL_ID, LAYOUT_VERSION};
    use crate::cell_proc::CellLayout;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Secrets {
        cluster_secret: String,
        cell_api_token: String,
        admin_token: String,
        client_token: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct LocalLayout {
        #[allow(dead_code)] // Read to pick this version; `migrate` writes the new one.
        version: u32,
        router_listen: SocketAddr,
        secrets: Secrets,
        cells: Vec<CellLayout>,
    }

    impl LocalLayout {
        /// The same cluster with a control plane: fresh ports for the
        /// control cell and server, fresh control tokens; everything else
        /// (ports, secrets, data) kept. Its first start stores the map of
        /// its cells and tells each cell what it owns.
        pub(super) fn migrate(self) -> Result<super::LocalLayout> {
            if self.cells.iter().any(|c| c.cell_id == CONTROL_CELL_ID) {
                anyhow::bail!(
                    "the layout has a data cell {CONTROL_CELL_ID}, the id of the control cell: \
                     it cannot be given a control plane; use a new directory"
                );
            }
            let s = self.secrets;
            Ok(super::LocalLayout {
                version: LAYOUT_VERSION,
                router_listen: self.router_listen,
                s3_listen: None,
                secrets: super::Secrets {
                    cluster_secret: s.cluster_secret,
                    cell_api_token: s.cell_api_token,
                    admin_token: s.admin_token,
                    client_token: s.client_token,
                    control_cell_token: secret("control-cell"),
                    control_admin_token: secret("control-admin"),
                    s3_access_key: String::new(),
                    s3_secret_key: String::new(),
                },
                control: ControlLayout::allocate()?,
                cells: self.cells,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_through_json_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LocalLayout::load(dir.path()).unwrap(), None);
        let layout = LocalLayout::allocate(3, 3, None).unwrap();
        layout.save(dir.path()).unwrap();
        assert_eq!(LocalLayout::load(dir.path()).unwrap(), Some(layout.clone()));

        // The persisted shape: addresses as strings, ids as numbers.
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(LAYOUT_FILE)).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["router_listen"], layout.router_listen.to_string());
        assert_eq!(v["cells"][2]["cell_id"], 3);
        assert_eq!(v["cells"][2]["peers"][0]["node_id"], 1);
        assert_eq!(
            v["cells"][2]["peers"][0]["api_addr"],
            layout.cells[2].peers[0].api_addr.to_string()
        );
        assert_eq!(v["secrets"]["client_token"], layout.secrets.client_token);
        assert_eq!(v["control"]["cell"]["cell_id"], 100);
        assert_eq!(
            v["control"]["admin_listen"],
            layout.control.admin_listen.to_string()
        );

        // Every port distinct, the control plane's too; the map lists every
        // data cell (not the control cell) with its API and control ports.
        let mut ports: Vec<u16> = layout
            .cells
            .iter()
            .chain(std::iter::once(&layout.control.cell))
            .flat_map(|c| &c.peers)
            .flat_map(|p| [p.api_addr.port(), p.raft_addr.port()])
            .collect();
        ports.push(layout.router_listen.port());
        ports.push(layout.control.admin_listen.port());
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
        let map = layout.cell_map();
        map.validate().unwrap();
        assert_eq!(map.cells.len(), 3);
        assert!(map.cell(CONTROL_CELL_ID).is_none());
        assert_eq!(
            map.cells[1].replicas[2].api_addr,
            layout.cells[1].peers[2].api_addr.to_string()
        );
        assert_eq!(
            map.cells[1].replicas[2].control_addr,
            Some(layout.cells[1].peers[2].raft_addr.to_string())
        );
        assert_eq!(layout.control.endpoints().len(), 3);

        // Another version is refused, not guessed at.
        let newer = LocalLayout {
            version: 3,
            ..layout
        };
        newer.save(dir.path()).unwrap();
        let err = LocalLayout::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("version 3"), "{err}");
        assert!(LocalLayout::allocate(0, 3, None).is_err());
        assert!(LocalLayout::allocate(100, 3, None).is_err());
        assert_eq!(
            LocalLayout::allocate(1, 1, Some(4242))
                .unwrap()
                .router_listen
                .port(),
            4242
        );
    }

    #[test]
    fn a_version_1_layout_gets_a_control_plane_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cells: Vec<CellLayout> = (1..=2)
            .map(|i| CellLayout::allocate(CellId(i), 3).unwrap())
            .collect();
        let v1 = serde_json::json!({
            "version": 1,
            "router_listen": "127.0.0.1:18080",
            "secrets": {
                "cluster_secret": "cluster-0123456789abcdef",
                "cell_api_token": "cell-api-0123456789abcdef",
                "admin_token": "admin-0123456789abcdef",
                "client_token": "client-0123456789abcdef"
            },
            "cells": cells,
        });
        std::fs::write(dir.path().join(LAYOUT_FILE), v1.to_string()).unwrap();
        let (l, from) = LocalLayout::load_versioned(dir.path()).unwrap().unwrap();
        assert_eq!(from, 1);
        assert_eq!(l.version, LAYOUT_VERSION);
        assert_eq!(l.cells, cells);
        assert_eq!(l.router_listen.port(), 18080);
        assert_eq!(l.secrets.client_token, "client-0123456789abcdef");
        assert_eq!(l.secrets.admin_token, "admin-0123456789abcdef");
        assert!(l.secrets.control_admin_token.len() >= 16);
        assert_ne!(l.secrets.control_admin_token, l.secrets.admin_token);
        assert_eq!(l.control.cell.cell_id, CONTROL_CELL_ID);
        assert_eq!(l.control.cell.peers.len(), 3);
        // Saved, it reads back as version 2, unchanged.
        l.save(dir.path()).unwrap();
        assert_eq!(
            LocalLayout::load_versioned(dir.path()).unwrap(),
            Some((l, LAYOUT_VERSION))
        );
        // A version-1 file with a key it never had is refused.
        let mut bad = v1;
        bad["colour"] = "red".into();
        std::fs::write(dir.path().join(LAYOUT_FILE), bad.to_string()).unwrap();
        assert!(LocalLayout::load(dir.path()).is_err());
    }

    #[test]
    fn added_cells_skip_the_control_cell_id() {
        let mut l = LocalLayout::allocate(2, 1, None).unwrap();
        assert_eq!(l.next_cell_id(), CellId(3));
        l.cells.push(CellLayout::allocate(CellId(99), 1).unwrap());
        assert_eq!(l.next_cell_id(), CellId(101));
        assert_eq!(next_free_id(0), CellId(1));
    }

    #[test]
    fn secrets_are_long_distinct_and_fresh() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        let all = [
            &a.cluster_secret,
            &a.cell_api_token,
            &a.admin_token,
            &a.client_token,
            &a.control_cell_token,
            &a.control_admin_token,
            &b.cluster_secret,
            &b.cell_api_token,
            &b.admin_token,
            &b.client_token,
            &b.control_cell_token,
            &b.control_admin_token,
        ];
        for s in all {
            assert!(s.len() >= 16, "{s}");
            assert!(s.bytes().all(|c| c.is_ascii_graphic()), "{s}");
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
