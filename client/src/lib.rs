//! Clients of cellkv's HTTP APIs, shared by the control plane, the
//! launcher, the load harness and the tests: a lean HTTP/1.1 client
//! (`http`), a client of one cell that follows its leader (`cell`), and a
//! client of the control server's admin API (`admin`).

pub mod admin;
pub mod cell;
pub mod http;
