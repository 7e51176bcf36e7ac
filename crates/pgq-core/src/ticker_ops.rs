//! What a ticker needs beyond pgq's own functions: the "one ticker per database" advisory lock,
//! database discovery, the millisecond fast-tick poll for `ticker_max_lag = 0` queues, tick
//! wakeups for databases without the `pgq.tick` trigger, detecting another ticker, and the
//! statistics behind a ticker's metrics.
//!
//! Roles: the lock, the session helpers ([`backend_pid`], [`end_sessions`], [`live_sessions`]),
//! discovery, [`pgq_presence`], [`ticker_features`], [`other_tickers`] and the
//! statistics need no pgq role; ticking ([`fast_tick_poll`], [`fast_tick_poll_plain`],
//! [`ticker_round`], [`ticker_round_notify`]) needs `pgq_admin`.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::error::{Op, Result, ResultExt};
use crate::types::TickId;

const LOCK: Op = Op::public("ticker_lock");
const DISCOVER: Op = Op::public("discover_databases");
const FEATURES: Op = Op::public("ticker_features");
const FAST: Op = Op::admin("fast_tick");
const STATS: Op = Op::public("ticker_stats");
const SESSIONS: Op = Op::public("ticker_sessions");

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

/// A session holding the ticker lock (another ticker).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    /// Backend process id of the holding session.
    pub pid: i32,
    /// Its `application_name` (empty when unset).
    pub application_name: String,
    /// Its client address (`None` for a Unix socket).
    pub client_addr: Option<String>,
}

/// Who holds the ticker lock on the current database, if anyone (from `pg_locks` and
/// `pg_stat_activity`).
///
/// Needs no pgq role (without `pg_read_all_stats`, another role's client address reads as `None`).
pub async fn ticker_lock_holder<'e>(
    ex: impl PgExecutor<'e>,
    key: i64,
) -> Result<Option<LockHolder>> {
    let row = sqlx::query!(
        r#"select l.pid as "pid!", coalesce(a.application_name, '') as "app!",
                  host(a.client_addr) as client_addr
             from pg_locks l
             left join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.granted
              and l.database = (select oid from pg_database where datname = current_database())
              and l.classid::int8 = ($1::int8 >> 32) & 4294967295
              and l.objid::int8 = $1::int8 & 4294967295
              and l.objsubid = 1
            limit 1"#,
        key
    )
    .fetch_optional(ex)
    .await
    .op(LOCK)?;
    Ok(row.map(|r| LockHolder {
        pid: r.pid,
        application_name: r.app,
        client_addr: r.client_addr,
    }))
}

/// Names of the databases that accept connections and are not templates (what a ticker running
/// discovery looks at), in name order.
///
/// Needs no pgq role.
pub async fn list_databases<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"select datname::text as "datname!" from pg_database
            where not datistemplate and datallowconn
            order by datname"#
    )
    .fetch_all(ex)
    .await
    .op(DISCOVER)
}

/// The pgq version installed in the current database: the `pgq` extension's version, or
/// `pgq.version()` when a `pgq` schema exists without the extension; `None` when there is no pgq.
///
/// Needs no pgq role.
pub async fn pgq_presence<'e>(ex: impl PgExecutor<'e>) -> Result<Option<String>> {
    sqlx::query_scalar!(
        r#"select coalesce((select extversion::text from pg_extension where extname = 'pgq'),
                           case when to_regnamespace('pgq') is not null then 'unknown' end)
              as version"#
    )
    .fetch_one(ex)
    .await
    .op(DISCOVER)
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

/// Inspect the current database for [`TickerFeatures`].
///
/// Needs no pgq role.
pub async fn ticker_features<'e>(ex: impl PgExecutor<'e>) -> Result<TickerFeatures> {
    let r = sqlx::query!(
        r#"select to_regprocedure('pgq_rs.fast_tick(int4,text)') is not null
                  and to_regprocedure('pgq_rs.ticker_notify(text)') is not null as "fast!",
                  exists (select 1 from pg_trigger
                           where tgrelid = to_regclass('pgq.tick')
                             and tgname = 'pgq_rs_tick_notify' and tgenabled <> 'D') as "trigger!",
                  (select count(*) from pgq.queue
                    where queue_ticker_max_lag = interval '0'
                      and not queue_ticker_paused and not queue_external_ticker) as "lag0!""#
    )
    .fetch_one(ex)
    .await
    .op(FEATURES)?;
    Ok(TickerFeatures {
        fast_tick: r.fast,
        tick_trigger: r.trigger,
        lag0_queues: r.lag0,
    })
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
    let r = sqlx::query!(
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
                     from pgq.queue q
                     cross join lateral (select tick_event_seq, tick_snapshot from pgq.tick
                                          where tick_queue = q.queue_id
                                          order by tick_queue desc, tick_id desc limit 1) t
                    where q.queue_ticker_max_lag = interval '0'
                      and not q.queue_ticker_paused and not q.queue_external_ticker) s"#,
        notify_channel,
        prev_snapshot
    )
    .fetch_one(ex)
    .await
    .op(FAST)?;
    Ok(FastTickPoll::new(r.names, r.ticks, r.lag0, r.snap))
}

/// The fast-tick poll for databases without our migration: ticks (`pgq.ticker(queue)`) every
/// `ticker_max_lag = 0` queue whose event sequence moved past its newest tick. Unlike
/// [`fast_tick_poll`] it may tick while the producing transaction is still committing, leaving
/// that event to a later tick; install the schema for exact millisecond ticks.
///
/// Needs `pgq_admin`.
pub async fn fast_tick_poll_plain<'e>(ex: impl PgExecutor<'e>) -> Result<FastTickPoll> {
    let r = sqlx::query!(
        r#"select count(*) as "lag0!",
                  coalesce(array_agg(queue_name) filter (where tick_id > 0), '{}') as "names!",
                  coalesce(array_agg(tick_id) filter (where tick_id > 0), '{}') as "ticks!"
             from (select q.queue_name,
                          case when coalesce(pg_sequence_last_value(q.queue_event_seq::regclass), 0)
                                        > t.tick_event_seq
                               then pgq.ticker(q.queue_name) end as tick_id
                     from pgq.queue q
                     cross join lateral (select tick_event_seq from pgq.tick
                                          where tick_queue = q.queue_id
                                          order by tick_queue desc, tick_id desc limit 1) t
                    where q.queue_ticker_max_lag = interval '0'
                      and not q.queue_ticker_paused and not q.queue_external_ticker) s"#
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

/// One ticker round: `pgq.ticker()` (every queue that is due), plus the count of
/// `ticker_max_lag = 0` queues, in one round trip.
///
/// Needs `pgq_admin`.
pub async fn ticker_round<'e>(ex: impl PgExecutor<'e>) -> Result<TickRound> {
    let r = sqlx::query!(
        r#"select pgq.ticker() as "n!",
                  (select count(*) from pgq.queue
                    where queue_ticker_max_lag = interval '0'
                      and not queue_ticker_paused and not queue_external_ticker) as "lag0!",
                  (select extract(epoch from min(ev_retry_after) - now())::float8
                     from pgq.retry_queue) as retry_due"#
    )
    .fetch_one(ex)
    .await
    .op(Op::admin("ticker"))?;
    Ok(TickRound {
        queues: r.n,
        lag0_queues: r.lag0,
        retry_due_in: due_in(r.retry_due),
    })
}

/// [`ticker_round`], then `NOTIFY channel, 'queue name'` once per queue that got a tick (needs our
/// migration's `pgq_rs.ticker_notify`). For databases where no trigger on `pgq.tick` wakes
/// consumers.
///
/// Needs `pgq_admin`.
pub async fn ticker_round_notify<'e>(ex: impl PgExecutor<'e>, channel: &str) -> Result<TickRound> {
    let r = sqlx::query!(
        r#"select pgq_rs.ticker_notify($1) as "n!",
                  (select count(*) from pgq.queue
                    where queue_ticker_max_lag = interval '0'
                      and not queue_ticker_paused and not queue_external_ticker) as "lag0!",
                  (select extract(epoch from min(ev_retry_after) - now())::float8
                     from pgq.retry_queue) as retry_due"#,
        channel
    )
    .fetch_one(ex)
    .await
    .op(Op::admin("ticker"))?;
    Ok(TickRound {
        queues: r.n,
        lag0_queues: r.lag0,
        retry_due_in: due_in(r.retry_due),
    })
}

/// Another session that looks like a ticker on the current database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OtherTicker {
    /// Its backend process id.
    pub pid: i32,
    /// Its `application_name` (empty when unset).
    pub application_name: String,
    /// Its client address (`None` for a Unix socket or when not visible).
    pub client_addr: Option<String>,
}

/// Sessions other than this one and other than holders of `lock_key` that tick the current
/// database: `application_name` `pgqd`, or whose last statement was `pgq.ticker()` (as pgqd's
/// is). Seeing other roles' statements needs `pg_read_all_stats` (or superuser).
///
/// Needs no pgq role.
pub async fn other_tickers<'e>(ex: impl PgExecutor<'e>, lock_key: i64) -> Result<Vec<OtherTicker>> {
    let rows = sqlx::query!(
        r#"select a.pid as "pid!", coalesce(a.application_name, '') as "app!",
                  host(a.client_addr) as client_addr
             from pg_stat_activity a
            where a.datname = current_database()
              and a.pid <> pg_backend_pid()
              and (a.application_name = 'pgqd'
                   or a.query ilike 'select pgq.ticker()%')
              and not exists (select 1 from pg_locks l
                               where l.pid = a.pid and l.locktype = 'advisory' and l.granted
                                 and l.classid::int8 = ($1::int8 >> 32) & 4294967295
                                 and l.objid::int8 = $1::int8 & 4294967295
                                 and l.objsubid = 1)
            order by a.pid"#,
        lock_key
    )
    .fetch_all(ex)
    .await
    .op(STATS)?;
    Ok(rows
        .into_iter()
        .map(|r| OtherTicker {
            pid: r.pid,
            application_name: r.app,
            client_addr: r.client_addr,
        })
        .collect())
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
