//! Load generation against cellkv and the machinery to run it locally: a lean
//! HTTP/1.1 client (`http`) and real replica processes on loopback (`cluster`).
//! It speaks only HTTP and `common`'s wire types; it never links the cell itself.

pub mod cluster;
pub mod http;
