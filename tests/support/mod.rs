//! Helpers shared by the root package's fault and bad-input tests (included with `#[path]`):
//! locating the `pgq` and `pgq-ticker` binaries, running them, re-running the test binary as a
//! child process, polling the database. The helpers every suite needs (names, polling, tick
//! counts, memory) live in `pgq_testkit` and are re-exported here.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use pgq_core::QueueName;
use pgq_core::sqlx::{self, Executor, PgPool};
use pgq_testkit::TestDb;

#[allow(
    unused_imports,
    reason = "each test binary including this module uses some of them"
)]
pub use pgq_testkit::{
    CONNECTION_VARS, DEADLINE, c, command, eventually, q, rss_kib, tick_count, wait_for,
};

/// A child process whose standard error is collected (see [`pgq_testkit::Process`]).
pub type Proc = pgq_testkit::Process;

/// The path of a workspace binary (see [`pgq_testkit::workspace_bin`]).
pub fn bin(name: &str) -> PathBuf {
    pgq_testkit::workspace_bin(name)
}

/// Environment variable telling a re-run test binary which child role to play.
pub const CHILD_ENV: &str = "PGQ_ROOT_TEST_CHILD";

/// Re-run this test binary so that only test `test` runs, with [`CHILD_ENV`] set to `mode` and
/// the given extra variables. The test does nothing unless that variable is set.
pub fn spawn_test_child(test: &str, mode: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(cmd)
}

/// The child mode, when this process is a re-run child.
pub fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A single `bigint` (e.g. a `count(*)`).
pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Run `sql` (fixtures only).
pub async fn exec(pool: &PgPool, sql: &str) {
    pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Make a login role (unique to `db`) with `password` and membership in `granted`; its name.
pub async fn make_role(db: &TestDb, role: &str, granted: &str, password: Option<&str>) -> String {
    db.create_role(role, granted, password).await
}

/// A queue whose `pgq.ticker()` ticks on every call (no idle back-off or event threshold wait).
pub async fn busy_queue(pool: &PgPool, name: &str) -> QueueName {
    let queue = q(name);
    pgq_core::create_queue(pool, &queue).await.unwrap();
    sqlx::query(
        "select pgq.set_queue_config($1, 'ticker_idle_period', '0'), \
                pgq.set_queue_config($1, 'ticker_max_lag', '50 milliseconds')",
    )
    .bind(name)
    .execute(pool)
    .await
    .unwrap();
    queue
}

/// How many sessions hold the ticker's advisory lock in the pool's database.
pub async fn ticker_lock_holders(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted \
           and database = (select oid from pg_database where datname = current_database()) \
           and classid::int8 = ($1::int8 >> 32) & 4294967295 \
           and objid::int8 = $1::int8 & 4294967295",
    )
    .bind(pgq_core::TICKER_LOCK_KEY)
    .fetch_one(pool)
    .await
    .unwrap()
}
