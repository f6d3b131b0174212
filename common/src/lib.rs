//! Types shared by every cellkv process: identifiers, the placement ring, the
//! cell map, the names and limits of objects, the cell API's wire types and the
//! control server's admin API types.
//! Pure code: no I/O, no RocksDB, no openraft, no HTTP server.

pub mod admin;
pub mod backoff;
pub mod cell_map;
pub mod config;
pub mod error;
pub mod ids;
pub mod names;
pub mod ownership;
pub mod ring;
pub mod secret;
pub mod wire;

pub use backoff::Backoff;
pub use cell_map::{CellMap, CellMapError, CellSpec, CellState, ReplicaSpec};
pub use error::{ErrorBody, ErrorCode, ErrorDetail, LeaderHint, MovedHint};
pub use ids::{CellId, NodeId};
pub use ownership::{RangeOwner, RoutingTable};
pub use ring::{key_hash, HashRange, Ring, RingError};
