//! Cell.
