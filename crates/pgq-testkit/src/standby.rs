//! A streaming standby of a private cluster, for failover tests: cloned from the primary with
//! `pg_basebackup -R` (so it streams from it and answers read-only queries), promoted with
//! `pg_ctl promote`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgq_testkit::Error> {
//! use pgq_testkit::{Cluster, TestDb};
//!
//! let primary = Cluster::start_private()?;
//! let db = TestDb::new_on(&primary).await; // the schema, cloned to the standby with the rest
//! let standby = primary.start_standby()?;
//! standby.wait_for_replay(&primary).await?; // everything committed so far is on the standby
//! primary.stop_immediate()?;
//! standby.promote()?; // accepts writes from here on
//! let both = format!(
//!     "host=127.0.0.1,127.0.0.1 port={},{} dbname={} user=postgres \
//!      target_session_attrs=read-write",
//!     primary.port(),
//!     standby.port(),
//!     db.name()
//! );
//! # drop(both); Ok(()) }
//! ```

use std::time::{Duration, Instant};

use sqlx::Connection as _;

use crate::cluster::{Kind, Private};
use crate::{Cluster, DEADLINE, Error, sys};

impl Cluster {
    /// Starts a streaming standby of this private cluster: a new private cluster cloned with
    /// `pg_basebackup -R -X stream` (as `postgres` when the tests run as root), with its own
    /// directory and port, `hot_standby = on`, streaming from this one. It has every database of
    /// the primary (test databases made before the clone included) and replays what the primary
    /// writes later. It is stopped and removed when dropped, like [`Cluster::start_private`].
    ///
    /// The primary must be a private cluster (not `PGQ_TEST_DATABASE_URL`) and running.
    pub fn start_standby(&self) -> Result<Cluster, Error> {
        let primary = self.private("start_standby")?;
        let started = Instant::now();
        let mut standby = Private::create()?;
        if let Err(e) = clone_and_start(&mut standby, primary) {
            standby.remove();
            return Err(e);
        }
        tracing::info!(
            dir = %standby.dir.display(),
            port = standby.port,
            primary_port = primary.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pgq-testkit: started a streaming standby"
        );
        Ok(Cluster::from_kind(Kind::Private(standby), false))
    }

    /// Promotes this standby to a primary (`pg_ctl promote -w`): returns once it accepts writes.
    pub fn promote(&self) -> Result<(), Error> {
        let p = self.private("promote")?;
        let mut cmd = p.pg("pg_ctl");
        cmd.args(["promote", "-w", "-t", "60", "-D"]).arg(&p.data);
        sys::run(cmd).map(drop)
    }

    /// Waits (at most [`DEADLINE`]) until this standby has replayed everything `primary` had
    /// written when called: what was committed there is visible here.
    pub async fn wait_for_replay(&self, primary: &Cluster) -> Result<(), Error> {
        let sql_error = |what: &str, e: sqlx::Error| Error::Command {
            command: what.to_owned(),
            status: "failed".into(),
            output: e.to_string(),
        };
        let mut conn = sqlx::PgConnection::connect(&primary.url("postgres"))
            .await
            .map_err(|e| sql_error("connect to the primary", e))?;
        let target: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| sql_error("pg_current_wal_lsn()", e))?;
        let _ = conn.close().await;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(|e| sql_error("connect to the standby", e))?;
        let started = Instant::now();
        loop {
            let done: Option<bool> =
                sqlx::query_scalar("select pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                    .bind(&target)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| sql_error("pg_last_wal_replay_lsn()", e))?;
            if done == Some(true) {
                let _ = conn.close().await;
                return Ok(());
            }
            if started.elapsed() > DEADLINE {
                return Err(Error::Command {
                    command: "wait_for_replay".into(),
                    status: format!("not caught up after {DEADLINE:?}"),
                    output: format!("the standby has not replayed up to {target}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Clone `primary` into `standby`'s data directory and start it as a standby on a free port.
fn clone_and_start(standby: &mut Private, primary: &Private) -> Result<(), Error> {
    let mut cmd = standby.pg("pg_basebackup");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &primary.port.to_string(),
        "-U",
        "postgres",
    ])
    .arg("-D")
    .arg(&standby.data)
    .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
    sys::run(cmd)?;
    // The copied configuration names the primary's socket directory and port: its own instead
    // (later lines win).
    standby.append_conf(&format!(
        "\n# pgq-testkit standby of port {}\n\
         unix_socket_directories = '{}'\n\
         hot_standby = on\n",
        primary.port,
        standby.dir.display().to_string().replace('\'', "''"),
    ))?;
    standby.start_on_free_port()
}
