//! Identifier newtypes that cross crate lines: a cell is a `CellId`, a replica
//! inside a cell is a `NodeId`. Bare integers never travel between crates.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one cell (one Raft group) in the cluster. Stable for the cell's life.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct CellId(pub u32);

/// Identifies one replica within its cell. Unique inside a cell; openraft's node id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
