//! Helpers shared by the root package's fault and bad-input tests (included with `#[path]`):
//! locating the `pgq` and `pgq-ticker` binaries, running them, re-running the test binary as a
//! child process, polling the database. The helpers every suite needs (names, polling, tick
//! counts, memory) live in `pgq_testkit` and are re-exported here.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_core::sqlx::{self, Executor, PgPool};
use pgq_core::QueueName;
use pgq_testkit::TestDb;

#[allow(unused_imports, reason = "each test binary including this module uses some of them")]
pub use pgq_testkit::{DEADLINE, c, eventually, q, rss_kib, tick_count, wait_for};

/// Environment variables that would change where `pgq` and `pgq-ticker` connect.
pub const CONNECTION_VARS: [&str; 9] = [
    "DATABASE_URL",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGCONNECT_TIMEOUT",
];

/// The path of a workspace binary (`pgq`, `pgq-ticker`) built next to this test binary
/// (`target/<profile>/`).
///
/// # Panics
///
/// When the binary has not been built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build them: cargo build --workspace (cargo test --workspace \
         --all-targets builds them before running tests)",
        path.display()
    );
    path
}

/// A command for binary `name` with no connection variables from the environment.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    for v in CONNECTION_VARS {
        c.env_remove(v);
    }
    c.env_remove("RUST_LOG");
    c.stdin(Stdio::null());
    c
}

/// A child process whose standard error is collected line by line; SIGKILLed when dropped.
pub struct Proc {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Start `cmd`, collecting its standard error (standard output is discarded).
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start a child process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    /// `pgq-ticker ARGS` with debug logging of the ticker.
    pub fn ticker(args: &[&str]) -> Proc {
        let mut cmd = command("pgq-ticker");
        cmd.args(args).env("RUST_LOG", "pgq_ticker=debug");
        Proc::spawn(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to standard error so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The lines written to standard error so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILL the process and reap it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait (at most [`DEADLINE`]) for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return st.code();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the process did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory in KiB (`VmRSS`), `None` once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
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
