//! pgq-ticker integration tests: the real binary against real PostgreSQL with pgq.

mod basic;
mod config;
mod ha;
mod halfopen;
mod hostile;
mod util;
