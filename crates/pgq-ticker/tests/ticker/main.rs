//! pgq-ticker integration tests: the real binary against real PostgreSQL with pgq.

mod basic;
mod config;
mod connect;
mod failover;
mod ha;
mod halfopen;
mod hostile;
mod pacing;
mod promises;
mod runtime;
mod util;
