//! Schema install (`install`) and health check (`check`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgConnection, Postgres};

use crate::error::{Error, Op, Result, ResultExt};
use crate::types::interval_to_duration;

/// The schema holding this project's own objects, including the migration bookkeeping table
/// (nothing is created in the user's `public` schema).
pub const OUR_SCHEMA: &str = "pgq_rs";

/// pgq versions this library supports (3.x; tested with 3.5).
pub const SUPPORTED_PGQ: &str = "3.x";

const INSTALL: Op = Op::admin("install");
// Reading our schema's version (the bookkeeping table) needs a pgq role; the least is pgq_reader.
const CHECK: Op = Op::reader("check");

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallReport {
    /// The pgq version now installed.
    pub pgq_version: String,
    /// The newest applied migration of our schema.
    pub schema_version: i64,
    /// Migrations applied by this call (empty when everything was already installed).
    pub applied: Vec<i64>,
    /// The pgq backend the database runs on.
    pub backend: crate::Backend,
    /// Why that backend, and what this call did to it (created, installed, upgraded, kept).
    pub backend_note: String,
}

fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.dangerous_set_table_name(format!("{OUR_SCHEMA}._sqlx_migrations"));
    m.create_schema(OUR_SCHEMA);
    m
}

/// Versions of every migration embedded in this build.
pub fn embedded_migrations() -> Vec<i64> {
    migrator().iter().map(|m| m.version).collect()
}

/// Install or upgrade the schema: pgq (the extension, or our SQL backend where the extension
/// cannot be created) and this project's migrations. Same as [`install_with`] with the defaults.
///
/// Idempotent and safe to re-run (concurrent runs are serialised by an advisory lock). The
/// extension needs a role that can `CREATE EXTENSION pgq` (a superuser) the first time; without
/// the package or the privilege, the SQL backend is installed instead (the report says which and
/// why), which a database owner can do.
pub async fn install<'a, A>(conn: A) -> Result<InstallReport>
where
    A: Acquire<'a, Database = Postgres>,
{
    install_with(conn, &crate::InstallOptions::default()).await
}

/// [`install`] with options: [`crate::InstallOptions::backend`] forces the extension or the SQL
/// backend. A database already on one backend keeps it; asking for the other is
/// [`crate::ErrorKind::BackendMismatch`]. When the extension is forced and the server lacks the
/// pgq package, the error names the package to install.
pub async fn install_with<'a, A>(conn: A, options: &crate::InstallOptions) -> Result<InstallReport>
where
    A: Acquire<'a, Database = Postgres>,
{
    let mut conn = conn.acquire().await.op(INSTALL)?;
    let migrator = migrator();
    let first = migrator
        .iter()
        .next()
        .ok_or_else(|| Error::invalid_input(INSTALL, "this build embeds no migrations"))?;
    let before = applied_versions(&mut conn).await?;
    let prepared = crate::backend::prepare(&mut conn, options.backend, first).await?;
    // The migrations are idempotent (`IF NOT EXISTS`): their NOTICEs ("schema pgq_rs already
    // exists, skipping") on every start are noise in the application's log.
    let level = client_min_messages(&mut conn, "warning").await?;
    let migrated = migrator.run(&mut *conn).await;
    client_min_messages(&mut conn, &level).await?;
    migrated.map_err(|source| Error::Migrate { source })?;
    let after = applied_versions(&mut conn).await?;
    let pgq_version = crate::discovery::version(&mut *conn).await?;
    check_version(&pgq_version)?;
    Ok(InstallReport {
        pgq_version,
        schema_version: after.iter().copied().max().unwrap_or(0),
        applied: after.into_iter().filter(|v| !before.contains(v)).collect(),
        backend: prepared.backend,
        backend_note: prepared.note,
    })
}

/// Set the session's `client_min_messages` to `level`; its previous value.
async fn client_min_messages(conn: &mut PgConnection, level: &str) -> Result<String> {
    let old = sqlx::query_scalar!(r#"select current_setting('client_min_messages') as "v!""#)
        .fetch_one(&mut *conn)
        .await
        .op(INSTALL)?;
    sqlx::query_scalar!(
        r#"select set_config('client_min_messages', $1, false) as "v!""#,
        level
    )
    .fetch_one(&mut *conn)
    .await
    .op(INSTALL)?;
    Ok(old)
}

/// The session of the ticker running on this database: the holder of pgq-ticker's advisory
/// lock, else a pgqd session.
async fn ticker_session(conn: &mut PgConnection) -> Result<Option<crate::TickerSession>> {
    if let Some(holder) = crate::ticker_lock_holder(&mut *conn, crate::TICKER_LOCK_KEY).await? {
        return Ok(Some(holder));
    }
    let others = crate::other_tickers(&mut *conn, crate::TICKER_LOCK_KEY).await?;
    Ok(others.into_iter().next())
}

fn check_version(v: &str) -> Result<()> {
    if v.starts_with("3.") {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion {
            found: v.to_owned(),
            needed: SUPPORTED_PGQ,
        })
    }
}

async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>> {
    let exists =
        sqlx::query_scalar!(r#"select to_regclass('pgq_rs._sqlx_migrations') is not null as "e!""#)
            .fetch_one(&mut *conn)
            .await
            .op(CHECK)?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!(
        r#"select version from pgq_rs._sqlx_migrations where success order by version"#
    )
    .fetch_all(&mut *conn)
    .await
    .op(CHECK)
}

/// The newest tick of one queue, for telling whether a ticker is alive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueTickAge {
    /// Queue name.
    pub queue_name: String,
    /// Time of the newest tick (`None`: the queue has no tick).
    pub last_tick_time: Option<DateTime<Utc>>,
    /// Age of the newest tick.
    pub age: Option<Duration>,
    /// The queue's idle period: a live ticker ticks at least this often.
    pub idle_period: Duration,
    /// Ticking is paused or external for this queue (its age says nothing about the ticker).
    pub not_ticked_here: bool,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// Installed pgq version (`None`: pgq is not installed).
    pub pgq_version: Option<String>,
    /// Newest applied migration of our schema (`None`: not installed by us).
    pub schema_version: Option<i64>,
    /// Newest migration this build embeds; greater than `schema_version` means install is due.
    pub latest_schema_version: i64,
    /// Tick age per queue.
    pub queues: Vec<QueueTickAge>,
    /// Whether a ticker is running on this database: a session holds the ticker's advisory lock
    /// (pgq-ticker, active or standby-free), or a pgqd session is connected. Tick ages say
    /// nothing about this (`create_queue` writes a tick). `None` when pgq is not installed, or
    /// there is neither a queue nor a ticker.
    pub ticker_alive: Option<bool>,
    /// The ticker's session, when one runs (the lock holder, else a pgqd session).
    pub ticker: Option<crate::TickerSession>,
    /// Which `pgq_coop` is installed (`None`: none); cooperative members need
    /// [`crate::CoopFlavor::PgqRs`].
    pub coop: Option<crate::CoopFlavor>,
    /// The pgq backend of the database (`None`: pgq is not installed).
    pub backend: Option<crate::Backend>,
}

/// Report the pgq version, our schema version, the age of the newest tick per queue, and whether
/// a ticker runs (from the ticker's own session, not from tick ages). Works without pgq
/// installed (reports `None`s).
///
/// Needs `pgq_reader` (or `pgq_writer`, or `pgq_admin`, which includes it): migration
/// `…09_monitoring_grants` lets the pgq roles read our schema's version. Without any pgq role the
/// error is [`crate::ErrorKind::PermissionDenied`] naming `pgq_reader`.
pub async fn check<'a, A>(conn: A) -> Result<CheckReport>
where
    A: Acquire<'a, Database = Postgres>,
{
    let mut conn = conn.acquire().await.op(CHECK)?;
    let mut pgq_version =
        sqlx::query_scalar!(r#"select extversion from pg_extension where extname = 'pgq'"#)
            .fetch_optional(&mut *conn)
            .await
            .op(CHECK)?;
    let backend = crate::backend::detect_backend(&mut *conn).await?;
    if pgq_version.is_none() && backend == Some(crate::Backend::Sql) {
        pgq_version = Some(crate::discovery::version(&mut *conn).await?);
    }
    let applied = applied_versions(&mut conn).await?;
    let coop = crate::coop::coop_flavor(&mut conn).await?;
    let mut queues = Vec::new();
    if pgq_version.is_some() {
        let rows = sqlx::query!(
            r#"select q.queue_name, q.queue_ticker_idle_period,
                      (q.queue_ticker_paused or q.queue_external_ticker) as "not_ticked!",
                      t.tick_time as "tick_time?", now() - t.tick_time as age
               from pgq.queue q
               left join lateral (select tick_time from pgq.tick
                                   where tick_queue = q.queue_id
                                   order by tick_id desc limit 1) t on true
               order by q.queue_name"#
        )
        .fetch_all(&mut *conn)
        .await
        .op(CHECK)?;
        queues = rows
            .into_iter()
            .map(|r| QueueTickAge {
                queue_name: r.queue_name,
                last_tick_time: r.tick_time,
                age: r.age.as_ref().map(interval_to_duration),
                idle_period: interval_to_duration(&r.queue_ticker_idle_period),
                not_ticked_here: r.not_ticked,
            })
            .collect();
    }
    let ticker = if pgq_version.is_some() {
        ticker_session(&mut conn).await?
    } else {
        None
    };
    let ticker_alive = match (&pgq_version, &ticker) {
        (None, _) => None,
        (Some(_), Some(_)) => Some(true),
        (Some(_), None) if queues.is_empty() => None,
        (Some(_), None) => Some(false),
    };
    Ok(CheckReport {
        pgq_version,
        schema_version: applied.iter().copied().max(),
        latest_schema_version: embedded_migrations().into_iter().max().unwrap_or(0),
        queues,
        ticker_alive,
        ticker,
        coop,
        backend,
    })
}
