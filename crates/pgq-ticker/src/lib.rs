//! # pgq-ticker
//!
//! Part of PgQ for Rust; built on [`pgq_core`]. Its capability is being built (see the README).

#![forbid(unsafe_code)]

pub use pgq_core;
