//! `Topology`: one immutable snapshot of what the router routes with — a cell
//! map, its routing table and a `CellClient` per cell. `proxy` swaps whole
//! snapshots when a newer map arrives; each request keeps the snapshot it
//! started with, so it never sees half of a swap.
//!
//! Building the next snapshot reuses the clients of cells that stay (their
//! breaker, bulkhead and leader cache survive; replicas and state are updated
//! in place), creates clients for new cells and drops removed ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::cell_map::CellMapError;
use common::{CellId, CellMap, CellState, RoutingTable};

use crate::cell_client::CellClient;

/// Why a map was not swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapRejected {
    #[error("invalid cell map: {0}")]
    Invalid(#[from] CellMapError),
    #[error("map epoch {offered} is not newer than the current epoch {current}")]
    NotNewer { offered: u64, current: u64 },
}

/// A cell map ready to route with.
pub struct Topology {
    pub map: CellMap,
    routing: RoutingTable,
    cells: BTreeMap<CellId, Arc<CellClient>>,
}

/// What changed between two snapshots (cell ids, sorted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopologyDiff {
    pub added: Vec<CellId>,
    pub removed: Vec<CellId>,
    pub updated: Vec<CellId>,
}

impl Topology {
    /// Builds a snapshot of `map` (validated here), reusing the clients of
    /// `previous` for cells that stay and calling `new_client` for new ones.
    pub fn build(
        map: CellMap,
        previous: Option<&Topology>,
        mut new_client: impl FnMut(&common::CellSpec) -> CellClient,
    ) -> Result<(Topology, TopologyDiff), CellMapError> {
        map.validate()?;
        let routing = map.routing()?;
        let mut diff = TopologyDiff::default();
        let mut cells = BTreeMap::new();
        for spec in &map.cells {
            let client = match previous.and_then(|p| p.cells.get(&spec.id)) {
                Some(c) => {
                    if c.update(spec) {
                        diff.updated.push(spec.id);
                    }
                    c.clone()
                }
                None => {
                    diff.added.push(spec.id);
                    Arc::new(new_client(spec))
                }
            };
            cells.insert(spec.id, client);
        }
        if let Some(p) = previous {
            diff.removed = p
                .cells
                .keys()
                .filter(|id| !cells.contains_key(id))
                .copied()
                .collect();
        }
        diff.added.sort();
        diff.updated.sort();
        Ok((
            Topology {
                map,
                routing,
                cells,
            },
            diff,
        ))
    }

    pub fn epoch(&self) -> u64 {
        self.map.epoch
    }

    /// The cell that owns `key` in `bucket` by this map.
    pub fn owner(&self, bucket: &str, key: &str) -> CellId {
        self.routing.cell_for(bucket, key)
    }

    pub fn cell(&self, id: CellId) -> Option<&Arc<CellClient>> {
        self.cells.get(&id)
    }

    /// Every cell of the map, by id.
    pub fn cells(&self) -> impl Iterator<Item = &Arc<CellClient>> {
        self.cells.values()
    }

    /// The cells a listing asks: every cell that may hold keys, i.e. all
    /// but `empty` ones (drained: they own nothing).
    pub fn listed_cells(&self) -> impl Iterator<Item = &Arc<CellClient>> {
        self.cells
            .values()
            .filter(|c| c.state() != CellState::Empty)
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::{CellSpec, NodeId, RangeOwner, ReplicaSpec};

    use super::*;
    use crate::config::RouterConfig;
    use crate::metrics::RouterMetrics;

    fn spec(id: u32, port: u16) -> CellSpec {
        CellSpec {
            id: CellId(id),
            weight: 1,
            replicas: vec![ReplicaSpec {
                node_id: NodeId(1),
                api_addr: format!("127.0.0.1:{port}"),
                control_addr: None,
            }],
            state: CellState::Active,
        }
    }

    fn build(map: CellMap, prev: Option<&Topology>) -> (Topology, TopologyDiff) {
        let cfg = RouterConfig::default();
        let metrics = Arc::new(RouterMetrics::new(prometheus::Registry::new()).unwrap());
        Topology::build(map, prev, |s| CellClient::new(s, &cfg, metrics.clone())).unwrap()
    }

    #[test]
    fn static_maps_route_by_the_ring_and_owners_win() {
        let map = CellMap {
            epoch: 1,
            cells: vec![spec(1, 7001), spec(2, 7002)],
            ..CellMap::default()
        };
        let ring = map.ring().unwrap();
        let (t, diff) = build(map.clone(), None);
        assert_eq!(diff.added, vec![CellId(1), CellId(2)]);
        for i in 0..200 {
            let k = format!("k{i}");
            assert_eq!(t.owner("b", &k), ring.cell_for("b", &k));
        }
        let mut owned = map;
        owned.epoch = 2;
        owned.owners = vec![RangeOwner(0, CellId(2))];
        let (t2, diff) = build(owned, Some(&t));
        assert_eq!(diff, TopologyDiff::default());
        assert!((0..50).all(|i| t2.owner("b", &format!("k{i}")) == CellId(2)));
    }

    #[test]
    fn a_swap_keeps_clients_of_staying_cells_and_updates_them_in_place() {
        let map = CellMap {
            epoch: 1,
            cells: vec![spec(1, 7001), spec(2, 7002)],
            ..CellMap::default()
        };
        let (t1, _) = build(map, None);
        let c1 = t1.cell(CellId(1)).unwrap().clone();
        c1.set_leader(Some(NodeId(1)));
        let mut changed = spec(1, 7101);
        changed.state = CellState::Isolated;
        let mut empty = spec(3, 7003);
        empty.state = CellState::Empty;
        let next = CellMap {
            epoch: 2,
            cells: vec![changed, empty],
            ..CellMap::default()
        };
        let (t2, diff) = build(next, Some(&t1));
        assert_eq!(
            diff,
            TopologyDiff {
                added: vec![CellId(3)],
                removed: vec![CellId(2)],
                updated: vec![CellId(1)],
            }
        );
        let c1b = t2.cell(CellId(1)).unwrap();
        assert!(Arc::ptr_eq(&c1, c1b), "the same client (breaker, bulkhead)");
        assert_eq!(c1b.state(), CellState::Isolated);
        assert_eq!(c1b.replicas()[0].api_addr, "127.0.0.1:7101");
        assert_eq!(c1b.leader(), Some(NodeId(1)), "node 1 is still listed");
        assert!(t2.cell(CellId(2)).is_none());
        let listed: Vec<CellId> = t2.listed_cells().map(|c| c.id).collect();
        assert_eq!(listed, vec![CellId(1)], "empty cells own nothing");
    }

    #[test]
    fn invalid_maps_are_refused() {
        let cfg = RouterConfig::default();
        let metrics = Arc::new(RouterMetrics::new(prometheus::Registry::new()).unwrap());
        let bad = CellMap {
            epoch: 3,
            cells: vec![spec(1, 7001)],
            owners: vec![RangeOwner(0, CellId(9))],
            ..CellMap::default()
        };
        let r = Topology::build(bad, None, |s| CellClient::new(s, &cfg, metrics.clone()));
        assert!(matches!(r, Err(CellMapError::UnknownOwner(CellId(9)))));
    }
}
