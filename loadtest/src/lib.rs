//! Loadtest.
