//! Types shared by every cellkv process: identifiers, the placement ring, the
//! cell map, the names and limits of objects, and the cell API's wire types.
//! Pure code: no I/O, no RocksDB, no openraft, no HTTP server.

pub mod ids;

pub use ids::{CellId, NodeId};
