//! Operator queries: what an administrator (the `pgq` CLI, a dashboard, a ticker's metrics) asks
//! about the state of the queues beyond pgq's own information functions — who holds back table
//! rotation, how many events wait in the retry queue, which pgq role the session has, per-queue
//! and per-consumer figures.
//!
//! Roles: [`rotation_blockers`], [`has_pgq_role`], [`queue_stats`] and [`consumer_stats`] need
//! no pgq role (pgq grants `SELECT` on its bookkeeping tables to everyone);
//! [`retry_queue_counts`] needs `pgq_reader`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgExecutor, Postgres};

use crate::error::{Op, PgqRole, Result, ResultExt};
use crate::sql::query_subscriptions;
use crate::types::{TickId, interval_to_duration};

const ADMIN_INFO: Op = Op::public("admin_info");
const RETRY_COUNTS: Op = Op::reader("retry_queue_counts");
const STATS: Op = Op::public("ticker_stats");

/// A consumer that keeps its queue from rotating its event tables.
///
/// pgq rotates a queue's tables (TRUNCATE of the oldest one) only when every consumer has moved
/// past the previous rotation; until the slowest consumer catches up, event tables grow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotationBlocker {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name.
    pub consumer_name: String,
    /// The consumer's last finished tick.
    pub last_tick_id: TickId,
    /// Time of that tick: how far back the consumer is.
    pub last_tick_time: DateTime<Utc>,
    /// How long the rotation is overdue (now minus last rotation minus the rotation period).
    pub overdue: Duration,
}

/// Consumers holding back a due table rotation, ordered by queue and consumer: the queue's
/// rotation period has passed, and the consumer's position still lies in the table that rotation
/// would truncate (the same test `pgq.maint_rotate_tables_step1` makes). Needs no pgq role.
pub async fn rotation_blockers<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<RotationBlocker>> {
    let rows = query_subscriptions!(
        query,
        r#"select s.queue_name, s.co_name, t.tick_id, t.tick_time,
                  now() - s.queue_switch_time - s.queue_rotation_period as "overdue!"
           from subscriptions s
           join pgq.tick t on t.tick_queue = s.queue_id and t.tick_id = s.sub_last_tick
           where s.queue_rotation_period is not null
             and s.queue_switch_step2 is not null
             and s.queue_switch_time + s.queue_rotation_period < now()
             and txid_snapshot_xmin(t.tick_snapshot) <= s.queue_switch_step2
           order by s.queue_name, s.co_name"#
    )
    .fetch_all(ex)
    .await
    .op(ADMIN_INFO)?;
    Ok(rows
        .into_iter()
        .map(|r| RotationBlocker {
            queue_name: r.queue_name,
            consumer_name: r.co_name,
            last_tick_id: TickId(r.tick_id),
            last_tick_time: r.tick_time,
            overdue: interval_to_duration(&r.overdue),
        })
        .collect())
}

/// Events waiting in one consumer's retry queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetryCount {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name.
    pub consumer_name: String,
    /// Events in `pgq.retry_queue` for this subscription.
    pub events: i64,
    /// When the earliest of them is due back (`pgq.maint_retry_events` moves it then).
    pub next_due: Option<DateTime<Utc>>,
}

/// Events in the retry queue per consumer (only consumers that have some), ordered by queue and
/// consumer.
///
/// Needs `pgq_reader`: the counts come from `pgq_rs.retry_counts()` (migration
/// `…09_monitoring_grants`), since pgq lets only `pgq_admin` read `pgq.retry_queue`. On a schema
/// older than that migration it reads `pgq.retry_queue` directly, which needs `pgq_admin`.
pub async fn retry_queue_counts<'a, A>(conn: A) -> Result<Vec<RetryCount>>
where
    A: Acquire<'a, Database = Postgres>,
{
    let mut conn = conn.acquire().await.op(RETRY_COUNTS)?;
    let ours = sqlx::query_scalar!(
        r#"select to_regprocedure('pgq_rs.retry_counts()') is not null as "ours!""#
    )
    .fetch_one(&mut *conn)
    .await
    .op(RETRY_COUNTS)?;
    if ours {
        let rows = sqlx::query!(
            r#"select queue_name as "queue_name!", consumer_name as "consumer_name!",
                      events as "events!", next_due
                 from pgq_rs.retry_counts()"#
        )
        .fetch_all(&mut *conn)
        .await
        .op(RETRY_COUNTS)?;
        return Ok(rows
            .into_iter()
            .map(|r| RetryCount {
                queue_name: r.queue_name,
                consumer_name: r.consumer_name,
                events: r.events,
                next_due: r.next_due,
            })
            .collect());
    }
    let rows = query_subscriptions!(
        query,
        r#"select s.queue_name, s.co_name, count(*) as "events!", min(r.ev_retry_after) as next_due
           from pgq.retry_queue r
           join subscriptions s on s.sub_id = r.ev_owner
           group by s.queue_name, s.co_name
           order by s.queue_name, s.co_name"#
    )
    .fetch_all(&mut *conn)
    .await
    .op(Op::admin("retry_queue_counts"))?;
    Ok(rows
        .into_iter()
        .map(|r| RetryCount {
            queue_name: r.queue_name,
            consumer_name: r.co_name,
            events: r.events,
            next_due: r.next_due,
        })
        .collect())
}

/// Whether the session's role has the privileges of a pgq role (membership, or superuser).
/// `false` when the role does not exist (pgq is not installed). Needs no pgq role.
pub async fn has_pgq_role<'e>(ex: impl PgExecutor<'e>, role: PgqRole) -> Result<bool> {
    sqlx::query_scalar!(
        r#"select coalesce((select pg_has_role(current_user, r.oid, 'usage')
                            from pg_roles r where r.rolname = $1), false) as "has!""#,
        role.as_str()
    )
    .fetch_one(ex)
    .await
    .op(ADMIN_INFO)
}

const HORIZON: Op = Op::reader("xmin_horizon_holder");

/// The oldest holder of the cluster's xmin horizon ([`xmin_horizon_holder`]).
///
/// While it holds the horizon, no row version written after it began can be removed anywhere in
/// the cluster: every batch adds versions of its consumer's `pgq.subscription` row that stay, and
/// consumers that look the row up by its key (pgq's own `next_batch`, python3-pgq, pgqueue) get
/// slower with every batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HorizonHolder {
    /// `session`, `replication slot` or `prepared transaction`.
    pub kind: String,
    /// The session's process id (for a slot, the walsender using it, if any).
    pub pid: Option<i32>,
    /// The session's role (for a prepared transaction, its owner).
    pub user: Option<String>,
    /// The session's `application_name`.
    pub application: Option<String>,
    /// The session's state (`idle in transaction`, `active`, …); a slot's `active`/`inactive`.
    pub state: Option<String>,
    /// The slot's name or the prepared transaction's gid.
    pub name: Option<String>,
    /// When the session's transaction (or statement) began, or the transaction was prepared;
    /// `None` for a slot.
    pub since: Option<DateTime<Utc>>,
    /// How long that is, as the server sees it now (`None` for a slot).
    pub held_for: Option<Duration>,
    /// How many transactions old the held horizon is.
    pub xid_age: i32,
}

/// The oldest holder of the cluster's xmin horizon — a session (its transaction id or
/// snapshot: a long or idle-in-transaction session, `pg_dump`), a replication slot, or a
/// prepared transaction — or `None` when nothing but this session holds one
/// (`pgq_rs.xmin_horizon_holder()`, migration `…10_held_horizon`; no query text is returned).
///
/// Needs `pgq_reader`.
pub async fn xmin_horizon_holder<'e>(ex: impl PgExecutor<'e>) -> Result<Option<HorizonHolder>> {
    let r = sqlx::query!(
        r#"select kind as "kind!", pid, usename, application_name, state, name, since,
                  extract(epoch from clock_timestamp() - since)::float8 as held_secs,
                  xid_age as "xid_age!"
             from pgq_rs.xmin_horizon_holder()"#
    )
    .fetch_optional(ex)
    .await
    .op(HORIZON)?;
    Ok(r.map(|r| HorizonHolder {
        kind: r.kind,
        pid: r.pid,
        user: r.usename,
        application: r.application_name,
        state: r.state,
        name: r.name,
        since: r.since,
        held_for: r
            .held_secs
            .map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)),
        xid_age: r.xid_age,
    }))
}

/// Per-queue figures for a ticker's metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue_name: String,
    /// Seconds since the queue's newest tick (`None`: no tick yet).
    pub tick_lag_secs: Option<f64>,
    /// Events per second between its two newest ticks (`None`: unknown).
    pub events_per_sec: Option<f64>,
    /// Events allocated since its newest tick (not yet in any batch).
    pub new_events: i64,
    /// Ticking is paused or external for this queue.
    pub not_ticked_here: bool,
}

/// [`QueueStats`] for every queue of the current database (`pgq.get_queue_info()`).
///
/// Needs no pgq role.
pub async fn queue_stats<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<QueueStats>> {
    let rows = sqlx::query!(
        r#"select queue_name as "queue_name!",
                  extract(epoch from ticker_lag)::float8 as tick_lag,
                  ev_per_sec, coalesce(ev_new, 0) as "ev_new!",
                  (queue_ticker_paused or queue_external_ticker) as "not_ticked!"
             from pgq.get_queue_info()
            order by queue_name"#
    )
    .fetch_all(ex)
    .await
    .op(STATS)?;
    Ok(rows
        .into_iter()
        .map(|r| QueueStats {
            queue_name: r.queue_name,
            tick_lag_secs: r.tick_lag,
            events_per_sec: r.ev_per_sec,
            new_events: r.ev_new,
            not_ticked_here: r.not_ticked,
        })
        .collect())
}

/// Per-consumer figures for a ticker's metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConsumerStats {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name.
    pub consumer_name: String,
    /// Seconds from the consumer's last finished tick to now (`None`: no position of its own).
    pub lag_secs: Option<f64>,
    /// Seconds since it last finished a batch.
    pub last_seen_secs: Option<f64>,
    /// Events waiting for it (`pending_events`).
    pub pending_events: i64,
}

/// [`ConsumerStats`] for every consumer of the current database (`pgq.get_consumer_info()`).
///
/// Needs no pgq role.
pub async fn consumer_stats<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<ConsumerStats>> {
    let rows = sqlx::query!(
        r#"select queue_name as "queue_name!", consumer_name as "consumer_name!",
                  extract(epoch from lag)::float8 as lag,
                  extract(epoch from last_seen)::float8 as last_seen,
                  coalesce(pending_events, 0) as "pending!"
             from pgq.get_consumer_info()
            order by queue_name, consumer_name"#
    )
    .fetch_all(ex)
    .await
    .op(STATS)?;
    Ok(rows
        .into_iter()
        .map(|r| ConsumerStats {
            queue_name: r.queue_name,
            consumer_name: r.consumer_name,
            lag_secs: r.lag,
            last_seen_secs: r.last_seen,
            pending_events: r.pending,
        })
        .collect())
}
