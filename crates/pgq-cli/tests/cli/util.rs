//! Running `pgq` against a test database.

use std::process::Output;

use assert_cmd::Command;
use pgq_testkit::{CONNECTION_VARS, TestDb};
use serde_json::Value;

/// `pgq` with a clean environment and no database chosen.
pub(crate) fn bare() -> Command {
    let mut c = assert_cmd::cargo::cargo_bin_cmd!("pgq");
    for v in CONNECTION_VARS {
        c.env_remove(v);
    }
    c.timeout(std::time::Duration::from_secs(120));
    c
}

/// `pgq --db URL ARGS...` for `db`.
pub(crate) fn pgq(db: &TestDb, args: &[&str]) -> Command {
    let mut c = bare();
    c.arg("--db").arg(db.url()).args(args);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "pgq {args:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Run a command that must succeed; its standard output.
pub(crate) fn ok(db: &TestDb, args: &[&str]) -> String {
    run_ok(pgq(db, args), args)
}

/// Run a prepared command that must succeed; its standard output.
pub(crate) fn run_ok(mut c: Command, args: &[&str]) -> String {
    let o = c.output().expect("run pgq");
    assert_eq!(o.status.code(), Some(0), "{}", describe(args, &o));
    text(&o.stdout)
}

/// Run a command with `--json` that must succeed; its output parsed.
pub(crate) fn json(db: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(db, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pgq {all:?}: not JSON ({e}): {out}"))
}

/// Run a command that must fail with `code`; its standard error.
pub(crate) fn fails(db: &TestDb, args: &[&str], code: i32) -> String {
    run_fails(pgq(db, args), args, code)
}

/// Run a prepared command that must fail with `code`; its standard error.
pub(crate) fn run_fails(mut c: Command, args: &[&str], code: i32) -> String {
    let o = c.output().expect("run pgq");
    assert_eq!(o.status.code(), Some(code), "{}", describe(args, &o));
    text(&o.stderr)
}

/// One SQL value from the test database.
pub(crate) async fn scalar<T>(db: &TestDb, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Run SQL statements on the test database.
pub(crate) async fn exec(db: &TestDb, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Number of events stored in all event tables of the database.
pub(crate) async fn stored_events(db: &TestDb) -> i64 {
    scalar(db, "select count(*) from pgq.event_template").await
}
