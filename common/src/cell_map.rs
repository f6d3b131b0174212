//! The cell map: the versioned document (epoch + cells with their weights,
//! replicas and state) that routers place keys with. Owns its serde shape and
//! its validation; placement itself is `crate::ring`.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{CellId, NodeId};
use crate::ownership::{RangeOwner, RoutingError, RoutingTable};
use crate::ring::{HashRange, Ring, RingError, MAX_TOTAL_WEIGHT};

/// The whole cluster layout at one epoch. A newer map has a larger epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellMap {
    /// Version of the map; bumped on every change.
    pub epoch: u64,
    /// Every cell of the cluster, in any order.
    #[serde(default)]
    pub cells: Vec<CellSpec>,
    /// Explicit ownership of the hash space, written by the control plane
    /// (`[start, cell]` rows, sorted, the first at 0). Empty in a static map:
    /// then ownership is the weighted ring of `cells`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<RangeOwner>,
    /// Ranges being handed between cells right now (informational: the cells
    /// themselves refuse what they must not serve).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<MovingRange>,
}

/// A range in the middle of a migration job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovingRange {
    pub range: HashRange,
    pub from: CellId,
    pub to: CellId,
    /// The migration job moving it.
    pub job: String,
}

/// One cell: its placement weight, its replicas and its routing state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    pub id: CellId,
    /// Placement weight; 1 is the default, 2 takes about twice the keys.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The cell's Raft replicas; at least one.
    #[serde(default)]
    pub replicas: Vec<ReplicaSpec>,
    #[serde(default)]
    pub state: CellState,
}

/// One replica of a cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSpec {
    pub node_id: NodeId,
    /// `"host:port"` of the replica's cell API.
    pub api_addr: String,
    /// `"host:port"` of the replica's control port (Raft RPC and `/admin/*`).
    /// Only the control plane uses it; routers never do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_addr: Option<String>,
}

/// How routers treat a cell. No state moves keys: ownership changes only
/// through migration jobs, which rewrite the map's `owners`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// Serving normally.
    #[default]
    Active,
    /// Requests for the cell's keys fail fast; its keys stay where they are.
    Isolated,
    /// Being emptied by a rebalance to a map without it; still serves its keys.
    Draining,
    /// Drained: owns no range any more and may be removed.
    Empty,
}

impl fmt::Display for CellState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CellState::Active => "active",
            CellState::Isolated => "isolated",
            CellState::Draining => "draining",
            CellState::Empty => "empty",
        })
    }
}

pub(crate) fn default_weight() -> u32 {
    1
}

/// What is wrong with a cell map, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CellMapError {
    #[error("the cell map has no cells; add at least one [[cells]] entry")]
    NoCells,
    #[error("cell {0} appears more than once; give every cell a unique id")]
    DuplicateCell(CellId),
    #[error("cell {0} has weight 0; use a weight >= 1 (remove the cell to give it no keys)")]
    ZeroWeight(CellId),
    #[error("the cell weights sum to {total}, above the maximum {max}; lower the weights")]
    TotalWeightTooLarge { total: u64, max: u64 },
    #[error("cell {0} has no replicas; list at least one replica")]
    NoReplicas(CellId),
    #[error("cell {cell} lists node {node} more than once; node ids must be unique within a cell")]
    DuplicateNode { cell: CellId, node: NodeId },
    #[error("ownership table: {0}")]
    Owners(#[from] RoutingError),
    #[error("the ownership table gives hashes to cell {0}, which is not in the map")]
    UnknownOwner(CellId),
    #[error(
        "cell {cell} node {node} has api_addr {addr:?}, which is not \"host:port\" \
         (e.g. \"10.0.0.5:7000\", \"[::1]:7000\" or \"cell1-a.internal:7000\"): {reason}"
    )]
    BadApiAddr {
        cell: CellId,
        node: NodeId,
        addr: String,
        reason: &'static str,
    },
}

impl CellMap {
    /// Checks the map: at least one cell; unique cell ids; weights >= 1 and
    /// within [`MAX_TOTAL_WEIGHT`]; every cell has >= 1 replica with unique
    /// node ids and a `host:port` api_addr. Reports the first problem found.
    pub fn validate(&self) -> Result<(), CellMapError> {
        if self.cells.is_empty() {
            return Err(CellMapError::NoCells);
        }
        let mut ids = HashSet::new();
        let mut total: u64 = 0;
        for cell in &self.cells {
            if !ids.insert(cell.id) {
                return Err(CellMapError::DuplicateCell(cell.id));
            }
            if cell.weight == 0 {
                return Err(CellMapError::ZeroWeight(cell.id));
            }
            total += u64::from(cell.weight);
            if cell.replicas.is_empty() {
                return Err(CellMapError::NoReplicas(cell.id));
            }
            let mut nodes = HashSet::new();
            for r in &cell.replicas {
                if !nodes.insert(r.node_id) {
                    return Err(CellMapError::DuplicateNode {
                        cell: cell.id,
                        node: r.node_id,
                    });
                }
                check_api_addr(&r.api_addr).map_err(|reason| CellMapError::BadApiAddr {
                    cell: cell.id,
                    node: r.node_id,
                    addr: r.api_addr.clone(),
                    reason,
                })?;
            }
        }
        if total > MAX_TOTAL_WEIGHT {
            return Err(CellMapError::TotalWeightTooLarge {
                total,
                max: MAX_TOTAL_WEIGHT,
            });
        }
        if !self.owners.is_empty() {
            let t = RoutingTable::from_owners(&self.owners)?;
            if let Some(c) = t.owners().into_iter().find(|c| !ids.contains(c)) {
                return Err(CellMapError::UnknownOwner(c));
            }
        }
        Ok(())
    }

    /// The placement ring of this map: every cell with its weight, whatever
    /// its state. Isolated cells keep their ranges (isolation fails requests
    /// fast, it does not move keys), and draining cells keep theirs until a
    /// map without them is published.
    pub fn ring(&self) -> Result<Ring, RingError> {
        let cells: Vec<(CellId, u32)> = self.cells.iter().map(|c| (c.id, c.weight)).collect();
        Ring::new(&cells)
    }

    /// Where routers send each hash: the explicit `owners` table if the map
    /// has one, else the weighted ring of every cell.
    pub fn routing(&self) -> Result<RoutingTable, CellMapError> {
        if self.owners.is_empty() {
            let ring = self.ring().map_err(|_| CellMapError::NoCells)?;
            Ok(RoutingTable::from_ring(&ring))
        } else {
            Ok(RoutingTable::from_owners(&self.owners)?)
        }
    }

    /// The ring a rebalance aims at: every cell that is not draining, empty
    /// or isolated-and-empty, with its weight. `None` if no cell qualifies.
    pub fn target_ring(&self) -> Option<Ring> {
        let cells: Vec<(CellId, u32)> = self
            .cells
            .iter()
            .filter(|c| matches!(c.state, CellState::Active | CellState::Isolated))
            .map(|c| (c.id, c.weight))
            .collect();
        Ring::new(&cells).ok()
    }

    /// The spec of cell `id`, if the map has it.
    pub fn cell(&self, id: CellId) -> Option<&CellSpec> {
        self.cells.iter().find(|c| c.id == id)
    }

    /// The spec of cell `id` to change, if the map has it.
    pub fn cell_mut(&mut self, id: CellId) -> Option<&mut CellSpec> {
        self.cells.iter_mut().find(|c| c.id == id)
    }
}

/// Accepts a socket address (`1.2.3.4:5`, `[::1]:5`) or `hostname:port` with
/// an RFC 1123 host name and a non-zero port.
pub(crate) fn check_api_addr(addr: &str) -> Result<(), &'static str> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return if sa.port() == 0 {
            Err("port 0 is not connectable")
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("missing \":port\"");
    };
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0 is not connectable"),
        Ok(_) => {}
        Err(_) => return Err("port is not a number in 1..=65535"),
    }
    if host.is_empty() {
        return Err("missing host");
    }
    if host.contains(':') || host.starts_with('[') {
        return Err("IPv6 addresses must be a valid address in brackets");
    }
    if host.len() > 253 {
        return Err("host name longer than 253 bytes");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err("host name must be dot-separated labels of letters, digits and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: u64, addr: &str) -> ReplicaSpec {
        ReplicaSpec {
            node_id: NodeId(node),
            api_addr: addr.to_string(),
            control_addr: None,
        }
    }

    fn cell(id: u32) -> CellSpec {
        CellSpec {
            id: CellId(id),
            weight: 1,
            replicas: (1..=3)
                .map(|n| replica(n, &format!("cell{id}-{n}.internal:7000")))
                .collect(),
            state: CellState::Active,
        }
    }

    fn map() -> CellMap {
        CellMap {
            epoch: 7,
            cells: vec![cell(1), cell(2), cell(3)],
            ..CellMap::default()
        }
    }

    #[test]
    fn valid_map_passes() {
        assert_eq!(map().validate(), Ok(()));
        let mut m = map();
        m.cells[0].replicas = vec![replica(1, "10.0.0.1:7000"), replica(2, "[::1]:7000")];
        m.cells[1].replicas = vec![replica(9, "localhost:1")];
        m.cells[2].weight = 3;
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn validate_reports_each_error() {
        let mut m = map();
        m.cells.clear();
        assert_eq!(m.validate(), Err(CellMapError::NoCells));

        let mut m = map();
        m.cells.push(cell(2));
        assert_eq!(m.validate(), Err(CellMapError::DuplicateCell(CellId(2))));

        let mut m = map();
        m.cells[1].weight = 0;
        assert_eq!(m.validate(), Err(CellMapError::ZeroWeight(CellId(2))));

        let mut m = map();
        m.cells[0].weight = 1000;
        m.cells[1].weight = 24;
        assert_eq!(
            m.validate(),
            Err(CellMapError::TotalWeightTooLarge {
                total: 1024 + 1,
                max: MAX_TOTAL_WEIGHT
            })
        );

        let mut m = map();
        m.cells[2].replicas.clear();
        assert_eq!(m.validate(), Err(CellMapError::NoReplicas(CellId(3))));

        let mut m = map();
        m.cells[0].replicas[2].node_id = NodeId(1);
        assert_eq!(
            m.validate(),
            Err(CellMapError::DuplicateNode {
                cell: CellId(1),
                node: NodeId(1)
            })
        );
        // The same node id in two different cells is fine.
        assert_eq!(
            map().cells[0].replicas[0].node_id,
            map().cells[1].replicas[0].node_id
        );
    }

    #[test]
    fn validate_rejects_bad_api_addrs() {
        for bad in [
            "",
            "host",
            "host:",
            ":7000",
            "host:0",
            "1.2.3.4:0",
            "host:65536",
            "host:http",
            "::1:7000",
            "[::1]",
            "[zz]:7000",
            "bad_host:7000",
            "-host:7000",
            "a..b:7000",
            "host name:7000",
        ] {
            let mut m = map();
            m.cells[1].replicas[1].api_addr = bad.to_string();
            match m.validate() {
                Err(CellMapError::BadApiAddr {
                    cell, node, addr, ..
                }) => {
                    assert_eq!((cell, node, addr.as_str()), (CellId(2), NodeId(2), bad));
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        for good in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "a-b.c:65535",
            "h:1",
            "10.0.0.5:80",
        ] {
            assert_eq!(check_api_addr(good), Ok(()), "{good}");
        }
        let err = CellMapError::BadApiAddr {
            cell: CellId(2),
            node: NodeId(3),
            addr: "x".into(),
            reason: "missing \":port\"",
        };
        assert!(err.to_string().contains("cell 2 node 3"));
    }

    #[test]
    fn json_round_trip() {
        let mut m = map();
        m.cells[1].state = CellState::Isolated;
        m.cells[2].state = CellState::Draining;
        m.cells[2].weight = 2;
        let json = serde_json::to_string_pretty(&m).expect("serialize");
        assert!(json.contains("\"isolated\"") && json.contains("\"draining\""));
        let back: CellMap = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn json_defaults_and_unknown_fields() {
        let json = r#"{"epoch": 3, "cells": [
            {"id": 5, "replicas": [{"node_id": 1, "api_addr": "a:1"}]}
        ]}"#;
        let m: CellMap = serde_json::from_str(json).expect("parse");
        assert_eq!(m.epoch, 3);
        assert_eq!(m.cells[0].id, CellId(5));
        assert_eq!(m.cells[0].weight, 1);
        assert_eq!(m.cells[0].state, CellState::Active);
        assert_eq!(m.validate(), Ok(()));

        let typo = r#"{"epoch": 3, "cells": [{"id": 5, "wieght": 2}]}"#;
        let err = serde_json::from_str::<CellMap>(typo).expect_err("unknown field");
        assert!(err.to_string().contains("wieght"), "{err}");
        let typo = r#"{"epoch": 3, "cells": [], "extra": 1}"#;
        assert!(serde_json::from_str::<CellMap>(typo).is_err());
        let bad_state = r#"{"epoch": 3, "cells": [{"id": 5, "state": "Isolated"}]}"#;
        assert!(serde_json::from_str::<CellMap>(bad_state).is_err());
        assert!(
            serde_json::from_str::<CellMap>(r#"{"cells": []}"#).is_err(),
            "epoch required"
        );
    }

    #[test]
    fn ring_keeps_isolated_and_draining_cells() {
        let mut m = map();
        m.cells[0].state = CellState::Isolated;
        m.cells[1].state = CellState::Draining;
        let ring = m.ring().expect("ring");
        assert_eq!(
            ring.cells().collect::<Vec<_>>(),
            vec![CellId(1), CellId(2), CellId(3)]
        );
        assert!(ring.share(CellId(1)) > 0.2 && ring.share(CellId(2)) > 0.2);
        let mut all_active = m.clone();
        for c in &mut all_active.cells {
            c.state = CellState::Active;
        }
        let active_ring = all_active.ring().expect("ring");
        assert!(
            ring.diff(&active_ring).is_empty(),
            "state changes move no keys"
        );
        assert_eq!(
            m.cell(CellId(2)).map(|c| c.state),
            Some(CellState::Draining)
        );
        assert!(m.cell(CellId(4)).is_none());
        let empty = CellMap {
            epoch: 1,
            ..CellMap::default()
        };
        assert_eq!(empty.ring(), Err(RingError::Empty));
    }
}
