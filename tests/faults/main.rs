//! Fault injection against real PostgreSQL (pgq-testkit clusters) and real processes: consumers
//! and tickers SIGKILLed, the server stopped in `immediate` mode under load, a soak with table
//! rotation, and a randomized chaos run with a "nothing lost" checker (`chaos`). Needs the
//! `pgq-ticker` binary built (`cargo build --workspace`).

#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod consumer_kill;
mod load;
mod server_restart;
mod soak;
mod ticker_kill;
