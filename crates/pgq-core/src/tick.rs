//! Ticking: what makes batches. `pgq.ticker()` rounds on the ticker's period, single queues
//! ticked now or from an external source, and the millisecond fast-tick poll for queues with
//! `ticker_max_lag = 0`; what a ticker can use in a database (our functions, the wakeup trigger
//! on `pgq.tick`).
//!
//! Roles: everything here needs `pgq_admin`, except [`force_tick`] (`pgq_reader`) and
//! [`ticker_features`] (no pgq role).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::error::{Error, Op, Result, ResultExt};
use crate::name::QueueName;
use crate::queue::{queue_not_found, with_queue};
use crate::sql::query_lag0_queues;
use crate::types::TickId;

const TICK: Op = Op::admin("ticker");
const FEATURES: Op = Op::public("ticker_features");
const FAST: Op = Op::admin("fast_tick");
const LAG0_CONSUMERS: Op = Op::reader("lag0_consumers");

/// Tick every queue that is neither paused nor externally ticked (`pgq.ticker()`), when its
/// `ticker_max_count` / `ticker_max_lag` / `ticker_idle_period` say so. Returns how many queues
/// were processed.
///
/// Needs `pgq_admin`.
pub async fn ticker<'e>(ex: impl PgExecutor<'e>) -> Result<i64> {
    sqlx::query_scalar!(r#"select pgq.ticker() as "n!""#)
        .fetch_one(ex)
        .await
        .op(TICK)
}

/// Tick one queue if its settings say so (`pgq.ticker(queue)`). Returns the new tick id, or
/// `None` when no tick was needed.
///
/// Needs `pgq_admin`.
pub async fn ticker_queue<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
) -> Result<Option<TickId>> {
    let r = sqlx::query_scalar!(r#"select pgq.ticker($1) as t"#, queue.as_str())
        .fetch_one(ex)
        .await
        .op(TICK)
        .map_err(|e| with_queue(e, queue))?;
    Ok(r.filter(|&t| t > 0).map(TickId))
}

/// Insert a tick from an external source (`pgq.ticker(queue, tick_id, time, event_seq)`), for
/// queues with `external_ticker` set. Returns the tick id.
///
/// Needs `pgq_admin`.
pub async fn ticker_external<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    tick_id: TickId,
    time: DateTime<Utc>,
    event_seq: i64,
) -> Result<TickId> {
    let r = sqlx::query_scalar!(
        r#"select pgq.ticker($1, $2, $3, $4) as "t!""#,
        queue.as_str(),
        tick_id.0,
        time,
        event_seq
    )
    .fetch_one(ex)
    .await
    .op(TICK)
    .map_err(|e| with_queue(e, queue))?;
    Ok(TickId(r))
}

/// Make the next ticker run tick this queue (`pgq.force_tick`): bumps the event sequence past
/// `ticker_max_count`. Returns the queue's current last tick.
///
/// Needs `pgq_reader`.
pub async fn force_tick<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<TickId> {
    force_tick_as(ex, queue, Op::reader("force_tick")).await
}

/// [`force_tick`], with `op` naming the operation (and the role a permission error names).
async fn force_tick_as<'e>(ex: impl PgExecutor<'e>, queue: &QueueName, op: Op) -> Result<TickId> {
    let r = sqlx::query_scalar!(r#"select pgq.force_tick($1) as t"#, queue.as_str())
        .fetch_one(ex)
        .await
        .op(op)?;
    r.map(TickId).ok_or_else(|| queue_not_found(op, queue))
}

/// Tick one queue now, whatever its thresholds: [`force_tick`] then [`ticker_queue`] in one
/// round of the caller's connection. Returns the new tick id (`None` when the queue is paused or
/// externally ticked).
///
/// Needs `pgq_admin` (which includes the `pgq_reader` that `force_tick` needs; a permission error
/// names `pgq_admin` whichever step fails).
pub async fn tick_now(conn: &mut PgConnection, queue: &QueueName) -> Result<Option<TickId>> {
    match force_tick_as(&mut *conn, queue, TICK).await {
        Ok(_) => {}
        // `pgq.force_tick` answers NULL for a queue that exists but has no tick yet (created
        // by hand, or its ticks deleted) as for a missing one; `pgq.ticker` ticks the former.
        Err(Error::QueueNotFound { .. })
            if crate::queue::queue_exists(&mut *conn, queue).await? => {}
        Err(e) => return Err(e),
    }
    ticker_queue(&mut *conn, queue).await
}

/// What the ticker can use in the current database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TickerFeatures {
    /// Our `pgq_rs.fast_tick` / `pgq_rs.ticker_notify` functions are installed.
    pub fast_tick: bool,
    /// The consumer wakeup trigger on `pgq.tick` (`pgq_rs_tick_notify`, our migrations) is
    /// installed and enabled: ticks wake consumers without the ticker's help.
    pub tick_trigger: bool,
    /// Number of queues with `ticker_max_lag = 0` that are ticked here (not paused, not external).
    pub lag0_queues: i64,
}

/// Inspect the current database for [`TickerFeatures`] (two statements on `conn`).
///
/// Needs no pgq role.
pub async fn ticker_features(conn: &mut PgConnection) -> Result<TickerFeatures> {
    let r = query_lag0_queues!(
        query,
        r#"select to_regprocedure('pgq_rs.fast_tick(int4,text)') is not null
                  and to_regprocedure('pgq_rs.ticker_notify(text)') is not null as "fast!",
                  (select count(*) from lag0_queues) as "lag0!""#
    )
    .fetch_one(&mut *conn)
    .await
    .op(FEATURES)?;
    Ok(TickerFeatures {
        fast_tick: r.fast,
        tick_trigger: tick_trigger_enabled(&mut *conn, FEATURES).await?,
        lag0_queues: r.lag0,
    })
}

/// Whether the consumer wakeup trigger on `pgq.tick` (`pgq_rs_tick_notify`, installed by
/// [`crate::install`]) is there and enabled: a disabled trigger (`ALTER TABLE … DISABLE
/// TRIGGER`) wakes nobody, so it counts as missing. Needs no pgq role.
pub(crate) async fn tick_trigger_enabled<'e>(ex: impl PgExecutor<'e>, op: Op) -> Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from pg_catalog.pg_trigger
                           where tgrelid = to_regclass('pgq.tick')
                             and tgname = 'pgq_rs_tick_notify' and tgenabled <> 'D') as "e!""#
    )
    .fetch_one(ex)
    .await
    .op(op)
}

/// The result of one fast-tick poll.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastTickPoll {
    /// Queues ticked by this poll, with their new tick.
    pub ticked: Vec<(String, TickId)>,
    /// Number of `ticker_max_lag = 0` queues looked at (0: polling can stop).
    pub lag0_queues: i64,
    /// The poll's snapshot (`txid_current_snapshot()` as text): pass it to the next poll.
    pub snapshot: String,
}

impl FastTickPoll {
    fn new(names: Vec<String>, ticks: Vec<i64>, lag0_queues: i64, snapshot: String) -> Self {
        FastTickPoll {
            ticked: names
                .into_iter()
                .zip(ticks.into_iter().map(TickId))
                .collect(),
            lag0_queues,
            snapshot,
        }
    }
}

/// One fast-tick poll over every queue with `ticker_max_lag = 0` (needs our migration
/// `pgq_rs.fast_tick`): a queue is looked at closely only when its event sequence moved past its
/// newest tick, or a transaction that was in progress at its newest tick has finished since the
/// previous poll (`prev_snapshot`, `None` on the first poll); it is ticked when committed events
/// exist that its newest tick does not cover. With `notify_channel`, each tick also sends
/// `NOTIFY channel, 'queue name'`. Run it on the same session as `pgq.ticker()`, never
/// concurrently with another ticker.
///
/// Needs `pgq_admin`.
pub async fn fast_tick_poll<'e>(
    ex: impl PgExecutor<'e>,
    notify_channel: Option<&str>,
    prev_snapshot: Option<&str>,
) -> Result<FastTickPoll> {
    let r = query_lag0_queues!(
        query,
        r#"select txid_current_snapshot()::text as "snap!",
                  count(*) as "lag0!",
                  coalesce(array_agg(queue_name) filter (where tick_id is not null), '{}')
                      as "names!",
                  coalesce(array_agg(tick_id) filter (where tick_id is not null), '{}')
                      as "ticks!"
             from (select q.queue_name,
                          case when coalesce(pg_sequence_last_value(q.queue_event_seq::regclass), 0)
                                        > t.tick_event_seq
                                 -- a fresh sequence reads 1 before and after its first value
                                 or (t.tick_event_seq = 1
                                     and pg_sequence_last_value(q.queue_event_seq::regclass) = 1)
                                 or exists (select 1 from txid_snapshot_xip(t.tick_snapshot) x
                                             where txid_visible_in_snapshot(x, txid_current_snapshot())
                                               and ($2::text is null
                                                    or not txid_visible_in_snapshot(x, $2::text::txid_snapshot)))
                               then pgq_rs.fast_tick(q.queue_id, $1) end as tick_id
                     from lag0_queues q
                     cross join lateral (select tick_event_seq, tick_snapshot from pgq.tick
                                          where tick_queue = q.queue_id
                                          order by tick_queue desc, tick_id desc limit 1) t) s"#,
        notify_channel,
        prev_snapshot
    )
    .fetch_one(ex)
    .await
    .op(FAST)?;
    Ok(FastTickPoll::new(r.names, r.ticks, r.lag0, r.snap))
}

/// The largest number of consumers active in the last minute on one `ticker_max_lag = 0` queue
/// of this database (0 when there is none). Every tick of such a queue wakes each of them for a
/// batch, so a ticker spaces its millisecond ticks by this number (docs/ticker.md, "Many
/// consumers"). Reads `pgq.subscription`: call it every few seconds, not on every poll.
///
/// Needs `pgq_reader`.
pub async fn lag0_consumers<'e>(ex: impl PgExecutor<'e>) -> Result<i64> {
    query_lag0_queues!(
        query_scalar,
        r#"select coalesce(max(n), 0) as "n!"
             from (select count(*) as n
                     from lag0_queues q
                     join pgq.subscription s on s.sub_queue = q.queue_id
                    where s.sub_active > now() - interval '1 minute'
                    group by q.queue_id) c"#
    )
    .fetch_one(ex)
    .await
    .op(LAG0_CONSUMERS)
}

/// The fast-tick poll for databases without our migration: ticks (`pgq.ticker(queue)`) every
/// `ticker_max_lag = 0` queue whose event sequence moved past its newest tick. Unlike
/// [`fast_tick_poll`] it may tick while the producing transaction is still committing, leaving
/// that event to a later tick; install the schema for exact millisecond ticks.
///
/// Needs `pgq_admin`.
pub async fn fast_tick_poll_plain<'e>(ex: impl PgExecutor<'e>) -> Result<FastTickPoll> {
    let r = query_lag0_queues!(
        query,
        r#"select count(*) as "lag0!",
                  coalesce(array_agg(queue_name) filter (where tick_id > 0), '{}') as "names!",
                  coalesce(array_agg(tick_id) filter (where tick_id > 0), '{}') as "ticks!"
             from (select q.queue_name,
                          case when coalesce(pg_sequence_last_value(q.queue_event_seq::regclass), 0)
                                        > t.tick_event_seq
                               then pgq.ticker(q.queue_name) end as tick_id
                     from lag0_queues q
                     cross join lateral (select tick_event_seq from pgq.tick
                                          where tick_queue = q.queue_id
                                          order by tick_queue desc, tick_id desc limit 1) t) s"#
    )
    .fetch_one(ex)
    .await
    .op(FAST)?;
    Ok(FastTickPoll::new(r.names, r.ticks, r.lag0, String::new()))
}

/// What one ticker round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickRound {
    /// What `pgq.ticker()` returned (the number of queues it looked at).
    pub queues: i64,
    /// Number of `ticker_max_lag = 0` queues ticked here (for deciding whether to fast-poll).
    pub lag0_queues: i64,
    /// How soon the earliest event in `pgq.retry_queue` is due back (zero when overdue; `None`
    /// when the retry queue is empty): lets a ticker run its retry mover when retries are due
    /// rather than only every retry period (one probe of pgq's index on `ev_retry_after`).
    pub retry_due_in: Option<Duration>,
}

/// A due time in seconds from now (as SQL computes it) as a duration, zero when past.
fn due_in(secs: Option<f64>) -> Option<Duration> {
    secs.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX))
}

/// One ticker round in one round trip: `$tick` (the statement that ticks every queue that is
/// due), the count of `ticker_max_lag = 0` queues, and when the earliest retry is due.
macro_rules! ticker_round {
    ($ex:expr, $tick:literal $(, $arg:expr)*) => {{
        let r = query_lag0_queues!(
            query,
            "select " + $tick + r#" as "n!",
                  (select count(*) from lag0_queues) as "lag0!",
                  (select extract(epoch from min(ev_retry_after) - now())::float8
                     from pgq.retry_queue) as retry_due"#
            $(, $arg)*
        )
        .fetch_one($ex)
        .await
        .op(TICK)?;
        Ok(TickRound {
            queues: r.n,
            lag0_queues: r.lag0,
            retry_due_in: due_in(r.retry_due),
        })
    }};
}

/// One ticker round: `pgq.ticker()` (every queue that is due), plus the count of
/// `ticker_max_lag = 0` queues, in one round trip.
///
/// Needs `pgq_admin`.
pub async fn ticker_round<'e>(ex: impl PgExecutor<'e>) -> Result<TickRound> {
    ticker_round!(ex, "pgq.ticker()")
}

/// [`ticker_round`], then `NOTIFY channel, 'queue name'` once per queue that got a tick (needs our
/// migration's `pgq_rs.ticker_notify`). For databases where no trigger on `pgq.tick` wakes
/// consumers.
///
/// Needs `pgq_admin`.
pub async fn ticker_round_notify<'e>(ex: impl PgExecutor<'e>, channel: &str) -> Result<TickRound> {
    ticker_round!(ex, "pgq_rs.ticker_notify($1)", channel)
}
