//! Private PostgreSQL clusters with the pgq extension, for tests and benchmarks (dev only).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use pgq_testkit::TestDb;
//!
//! // A fresh database with the schema installed, on the cluster shared by this test binary.
//! let db = TestDb::new().await;
//! let version: String = sqlx::query_scalar("select pgq.version()")
//!     .fetch_one(db.pool())
//!     .await
//!     .unwrap();
//! assert!(version.starts_with('3'));
//! # }
//! ```
//!
//! - [`Cluster::shared`] is one cluster per test binary, started lazily from the system's PostgreSQL
//!   binaries (`pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`, or
//!   `PGQ_TEST_PG_BINDIR`) and removed when the test process exits, even if it is killed.
//! - [`Cluster::start_private`] gives a fault test its own cluster to stop, kill and restart;
//!   [`Cluster::start_standby`] clones it into a streaming standby that
//!   [`Cluster::promote`] turns into the new primary (failover tests; [`Failover`] sets up a
//!   primary, a standby, a queue and the two-host connection string, and fails over;
//!   [`Arrivals`] and [`numbered_events`] track which events arrived when).
//! - [`TestDb`] is a fresh database per test, cloned from a template with the schema installed.
//! - [`Relay`] is a TCP relay to a cluster that a network-fault test can freeze (a half-open
//!   connection), thaw or cut.
//! - [`TestDb::create_role`] / [`TestDb::pool_as`]: a login role unique to the test's database
//!   (roles are cluster-wide and tests run in parallel), and a pool connected as it.
//! - Helpers every suite needs, in one place: [`q`] / [`c`] (names), [`eventually`] /
//!   [`wait_for`] (polling with a hang guard, [`DEADLINE`]), [`tick_count`], [`rss_kib`],
//!   [`free_port`]; [`make_ca`] (a throw-away certificate authority for TLS tests).
//! - [`Process`]: a workspace binary (`pgq`, `pgq-ticker`, found by [`workspace_bin`], started
//!   by [`command`] without the caller's connection variables) running as a child process whose
//!   standard error is collected; SIGKILLed when dropped.
//! - [`TickerProc`]: a `pgq-ticker` process (the binary passed in) with its log (each line timed),
//!   signals, exit within a bound, and its `/health` ([`http_get`]); [`Pgqd`]: a real pgqd, an
//!   interop peer checked by [`peer_available`] (missing: a failure under `PGQ_REQUIRE_PEERS=1`
//!   or `CI=true`, else a SKIPPED banner).
//! - `PGQ_TEST_DATABASE_URL=postgres://superuser@host:port/db` makes [`Cluster::shared`] use that
//!   existing server instead of starting one.
//! - `PGQ_TEST_BACKEND=sql` makes [`TestDb::new`] install this project's SQL backend instead of
//!   the pgq extension ([`test_backend`]); [`TestDb::new_with_backend`] chooses per test.
//!
//! Clusters live in `/tmp/pgq-testkit/` and run as the `postgres` OS user when the tests run as root.
//! They listen on `127.0.0.1` on a free port and trust every local connection; `fsync` is off.
//! Requirements: PostgreSQL server binaries and the pgq extension (`scripts/setup-env` installs them).

#![forbid(unsafe_code)]

mod arrivals;
mod backend;
mod cluster;
mod db;
mod error;
mod failover;
mod helpers;
mod process;
mod relay;
mod standby;
mod sys;
mod ticker;
mod tls;

pub use arrivals::{Arrivals, numbered_events};
pub use backend::{BACKEND_ENV, Backend, test_backend};
pub use cluster::Cluster;
pub use db::TestDb;
pub use error::Error;
pub use failover::Failover;
pub use helpers::{DEADLINE, c, eventually, free_port, q, rss_kib, tick_count, wait_for};
pub use process::{CONNECTION_VARS, Process, command, workspace_bin};
pub use relay::Relay;
pub use ticker::{
    LogLine, MAX_KEPT_LINES, Pgqd, TickerOptions, TickerProc, http_get, peer_available,
    peers_required,
};
pub use tls::make_ca;
