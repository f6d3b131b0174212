//! cellkv's S3 protocol layer, pure (no server, no runtime): what an S3
//! request means and whether it is authentic, and how S3 answers. The router
//! mounts it; storing and listing stay with the router and the cells.
//!
//! ```text
//!  request parts ──▶ sigv4::Verifier::verify ──▶ Verified (key, scope, payload mode)
//!        │                                             │
//!        └─▶ names::parse_operation ──▶ Operation      ├─ Sha256/Unsigned: body as is
//!                                                      └─ STREAMING-*: chunked::ChunkedDecoder
//!  body bytes ──▶ (decoder) ──▶ checksum::ChecksumSet::update ──▶ finish ──▶ BodyDigests (ETag, checksum)
//!  answers: xml::* documents, error::S3Error::to_xml
//! ```

pub mod checksum;
pub mod chunked;
pub mod error;
pub mod names;
pub mod sigv4;
mod timestamp;
pub mod xml;

pub use checksum::{BodyDigests, ChecksumAlgorithm, ChecksumSet};
pub use chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits};
pub use error::{ErrorCode, S3Error};
pub use names::{parse_operation, Operation};
pub use sigv4::{AuthError, PayloadMode, SecretKey, Verified, Verifier};
pub use timestamp::format_iso8601;
