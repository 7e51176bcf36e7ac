//! One ticker per database: the advisory lock a ticker holds on each database it ticks, who
//! holds it, other tickers (pgqd) seen on the database, and the session ids a ticker needs to
//! end its own sessions at a stop.
//!
//! Roles: nothing here needs a pgq role.

use sqlx::PgExecutor;

use crate::error::{Op, Result, ResultExt};
use crate::sql::query_lock_holders;

const LOCK: Op = Op::public("ticker_lock");
const SESSIONS: Op = Op::public("ticker_sessions");
const OTHERS: Op = Op::public("ticker_stats");

/// The advisory-lock key a ticker holds (session level) on each database it ticks, so only one
/// ticker process ticks a database at a time. Spells `pgq_tick` in ASCII.
pub const TICKER_LOCK_KEY: i64 = 0x7067_715f_7469_636b;

/// Try to take the ticker lock on the session behind `ex` (`pg_try_advisory_lock`); `true` when
/// this session now holds it. Use a dedicated connection: the lock lives as long as the session.
///
/// Needs no pgq role.
pub async fn try_ticker_lock<'e>(ex: impl PgExecutor<'e>, key: i64) -> Result<bool> {
    sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, key)
        .fetch_one(ex)
        .await
        .op(LOCK)
}

/// Release the ticker lock held by this session (`pg_advisory_unlock`); `false` when it was not
/// held. Closing the session releases it too.
///
/// Needs no pgq role.
pub async fn ticker_unlock<'e>(ex: impl PgExecutor<'e>, key: i64) -> Result<bool> {
    sqlx::query_scalar!(r#"select pg_advisory_unlock($1) as "unlocked!""#, key)
        .fetch_one(ex)
        .await
        .op(LOCK)
}

/// The backend process id of the session behind `ex` (`pg_backend_pid()`): what
/// [`end_sessions`] needs to stop that session's statements from another session.
///
/// Needs no pgq role.
pub async fn backend_pid<'e>(ex: impl PgExecutor<'e>) -> Result<i32> {
    sqlx::query_scalar!(r#"select pg_backend_pid() as "pid!""#)
        .fetch_one(ex)
        .await
        .op(SESSIONS)
}

/// End the sessions with backend ids `pids` (`pg_terminate_backend`): each one's running statement
/// and open transaction are rolled back and its session locks (the ticker lock) released. Returns
/// how many were signalled (a pid that is no longer a backend is skipped). The sessions are gone
/// once [`live_sessions`] no longer lists them.
///
/// Needs the role that owns those sessions (or `pg_signal_backend`; a superuser's sessions need a
/// superuser).
pub async fn end_sessions<'e>(ex: impl PgExecutor<'e>, pids: &[i32]) -> Result<i64> {
    sqlx::query_scalar!(
        r#"select count(*) filter (where pg_terminate_backend(p)) as "ended!"
             from unnest($1::int4[]) p
            where p <> pg_backend_pid()"#,
        pids
    )
    .fetch_one(ex)
    .await
    .op(SESSIONS)
}

/// Which of the backend ids `pids` still belong to a session (`pg_stat_activity`). A session
/// leaves it only after its transaction has been rolled back and its locks released.
///
/// Needs no pgq role.
pub async fn live_sessions<'e>(ex: impl PgExecutor<'e>, pids: &[i32]) -> Result<Vec<i32>> {
    sqlx::query_scalar!(
        r#"select pid as "pid!" from pg_stat_activity where pid = any($1::int4[]) order by pid"#,
        pids
    )
    .fetch_all(ex)
    .await
    .op(SESSIONS)
}

/// A ticker's session on the current database: one holding the ticker lock
/// ([`ticker_lock_holder`]), or another ticker found by [`other_tickers`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TickerSession {
    /// Its backend process id.
    pub pid: i32,
    /// Its `application_name` (empty when unset).
    pub application_name: String,
    /// Its client address (`None` for a Unix socket, or when not visible).
    pub client_addr: Option<String>,
}

/// Who holds the ticker lock on the current database, if anyone (from `pg_locks` and
/// `pg_stat_activity`).
///
/// Needs no pgq role (without `pg_read_all_stats`, another role's client address reads as `None`).
pub async fn ticker_lock_holder<'e>(
    ex: impl PgExecutor<'e>,
    key: i64,
) -> Result<Option<TickerSession>> {
    query_lock_holders!(
        query_as(TickerSession),
        r#"select h.pid as "pid!", coalesce(a.application_name, '') as "application_name!",
                  host(a.client_addr) as client_addr
             from lock_holders h
             left join pg_stat_activity a on a.pid = h.pid
            limit 1"#,
        key
    )
    .fetch_optional(ex)
    .await
    .op(LOCK)
}

/// Sessions other than this one and other than holders of `lock_key` that tick the current
/// database: `application_name` `pgqd`, or whose last statement was `pgq.ticker()` (as pgqd's
/// is). Seeing other roles' statements needs `pg_read_all_stats` (or superuser).
///
/// Needs no pgq role.
pub async fn other_tickers<'e>(
    ex: impl PgExecutor<'e>,
    lock_key: i64,
) -> Result<Vec<TickerSession>> {
    query_lock_holders!(
        query_as(TickerSession),
        r#"select a.pid as "pid!", coalesce(a.application_name, '') as "application_name!",
                  host(a.client_addr) as client_addr
             from pg_stat_activity a
            where a.datname = current_database()
              and a.pid <> pg_backend_pid()
              and (a.application_name = 'pgqd'
                   or a.query ilike 'select pgq.ticker()%')
              and not exists (select 1 from lock_holders h where h.pid = a.pid)
            order by a.pid"#,
        lock_key
    )
    .fetch_all(ex)
    .await
    .op(OTHERS)
}
