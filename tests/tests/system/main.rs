//! The whole-system tests, one test binary: they start the real binaries
//! (`cargo build --release --bins` first) on loopback, in fresh temp dirs
//! and ports per test. One module per area; the shared set-up, load and
//! checks are in `support`.

mod support;

mod attach;
mod bad_input;
mod cell;
mod cell_ownership;
mod leadership;
mod loadtest_faults;
mod loadtest_smoke;
mod operators;
mod router;
mod s3;
mod slow_clients;
