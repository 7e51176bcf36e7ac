//! Consuming: batches, the streaming event read, retries and finishing.
//!
//! Roles: everything here needs `pgq_reader`, except [`event_retry_raw`] (`pgq_admin`) and
//! [`batch_owner`] (no pgq role).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

use crate::error::{Error, Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::queue::with_queue;
use crate::sql::{query_batch_events, query_subscriptions};
use crate::types::{
    BatchDetails, BatchId, BatchInfo, Event, EventId, EventRow, TickId, duration_to_interval,
    opt_interval,
};

const NEXT: Op = Op::reader("next_batch");
const EVENTS: Op = Op::reader("get_batch_events");
const RETRY: Op = Op::reader("event_retry");
const FINISH: Op = Op::reader("finish_batch");
const OWNER: Op = Op::public("batch_owner");

/// The next batch id, or `None` when there is no new tick (`pgq.next_batch`). Until it is
/// finished, the same batch id is returned again.
///
/// Needs `pgq_reader`.
pub async fn next_batch<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<Option<BatchId>> {
    let r = sqlx::query_scalar!(
        r#"select pgq.next_batch($1, $2) as b"#,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_one(ex)
    .await
    .op(NEXT)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r.map(BatchId))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_info(
    batch_id: Option<i64>,
    cur_tick_id: Option<i64>,
    prev_tick_id: Option<i64>,
    cur_tick_time: Option<DateTime<Utc>>,
    prev_tick_time: Option<DateTime<Utc>>,
    cur_seq: Option<i64>,
    prev_seq: Option<i64>,
) -> Option<BatchInfo> {
    Some(BatchInfo {
        batch_id: BatchId(batch_id?),
        cur_tick_id: TickId(cur_tick_id.unwrap_or_default()),
        prev_tick_id: TickId(prev_tick_id.unwrap_or_default()),
        cur_tick_time: cur_tick_time.unwrap_or_default(),
        prev_tick_time: prev_tick_time.unwrap_or_default(),
        cur_tick_event_seq: cur_seq.unwrap_or_default(),
        prev_tick_event_seq: prev_seq.unwrap_or_default(),
    })
}

/// The next batch with its tick information, or `None` (`pgq.next_batch_info`).
///
/// Needs `pgq_reader`.
pub async fn next_batch_info<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<Option<BatchInfo>> {
    let r = sqlx::query!(
        r#"select * from pgq.next_batch_info($1, $2)"#,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_one(ex)
    .await
    .op(NEXT)
    .map_err(|e| with_queue(e, queue))?;
    Ok(batch_info(
        r.batch_id,
        r.cur_tick_id,
        r.prev_tick_id,
        r.cur_tick_time,
        r.prev_tick_time,
        r.cur_tick_event_seq,
        r.prev_tick_event_seq,
    ))
}

/// Batch-size tuning for [`next_batch_custom`]: wait until the batch is at least this old, has at
/// least this many events, or spans at least this long. `None` means no condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTuning {
    /// The batch's end tick must be at least this old.
    pub min_lag: Option<Duration>,
    /// The batch must hold at least this many events (estimated from sequences).
    pub min_count: Option<i32>,
    /// The batch must span at least this long.
    pub min_interval: Option<Duration>,
}

/// The next batch honouring [`BatchTuning`] (`pgq.next_batch_custom`), or `None`.
///
/// Needs `pgq_reader`.
pub async fn next_batch_custom<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    tuning: BatchTuning,
) -> Result<Option<BatchInfo>> {
    if tuning.min_count.is_some_and(|c| c < 0) {
        return Err(Error::invalid_input(NEXT, "min_count must not be negative"));
    }
    let r = sqlx::query!(
        r#"select * from pgq.next_batch_custom($1, $2, $3, $4, $5)"#,
        queue.as_str(),
        consumer.as_str(),
        tuning.min_lag.map(duration_to_interval),
        tuning.min_count,
        tuning.min_interval.map(duration_to_interval)
    )
    .fetch_one(ex)
    .await
    .op(NEXT)
    .map_err(|e| with_queue(e, queue))?;
    Ok(batch_info(
        r.batch_id,
        r.cur_tick_id,
        r.prev_tick_id,
        r.cur_tick_time,
        r.prev_tick_time,
        r.cur_tick_event_seq,
        r.prev_tick_event_seq,
    ))
}

/// All events of a batch at once (`pgq.get_batch_events`). Loads the whole batch into memory:
/// prefer [`stream_batch_events`] unless batches are known to be small.
///
/// Needs `pgq_reader`.
pub async fn get_batch_events<'e>(ex: impl PgExecutor<'e>, batch: BatchId) -> Result<Vec<Event>> {
    query_batch_events!("pgq.get_batch_events($1)", batch.0)
        .fetch_all(ex)
        .await
        .op(EVENTS)
        .map_err(|e| batch_ctx(e, batch))
}

/// Fetch events of a batch through a named cursor (`pgq.get_batch_cursor`): the first
/// `quick_limit` rows are returned, and the cursor `cursor_name` stays open in the transaction for
/// `FETCH`ing the rest. `extra_where_sql_raw` is raw SQL appended as a filter: it is **not**
/// escaped, so never pass untrusted input (the typed filters of [`stream_batch_events`] bind
/// their values instead). Must run inside a transaction.
///
/// Needs `pgq_reader`.
pub async fn get_batch_cursor(
    conn: &mut PgConnection,
    batch: BatchId,
    cursor_name: &str,
    quick_limit: i32,
    extra_where_sql_raw: Option<&str>,
) -> Result<Vec<Event>> {
    const OP: Op = Op::reader("get_batch_cursor");
    crate::produce::check_text(OP.name, "cursor_name", cursor_name)?;
    // pgq's three-argument form is this one with a NULL filter.
    query_batch_events!(
        "pgq.get_batch_cursor($1, $2, $3, $4::text)",
        batch.0,
        cursor_name,
        quick_limit,
        extra_where_sql_raw
    )
    .fetch_all(&mut *conn)
    .await
    .op(OP)
    .map_err(|e| batch_ctx(e, batch))
}

pub(crate) fn batch_ctx(e: Error, batch: BatchId) -> Error {
    match e {
        Error::BatchNotFound { op, source, .. } => Error::BatchNotFound {
            op,
            batch: batch.0,
            source,
        },
        other => other,
    }
}

/// The SQL that selects a batch's events (`pgq.batch_event_sql`).
///
/// Needs `pgq_reader`.
pub async fn batch_event_sql<'e>(ex: impl PgExecutor<'e>, batch: BatchId) -> Result<String> {
    const OP: Op = Op::reader("batch_event_sql");
    sqlx::query_scalar!(r#"select pgq.batch_event_sql($1) as "sql!""#, batch.0)
        .fetch_one(ex)
        .await
        .op(OP)
        .map_err(|e| batch_ctx(e, batch))
}

/// Typed filters for [`stream_batch_events`]. Values are bound as parameters, never spliced into
/// SQL. An empty list means "no condition"; conditions combine with AND. Events a filter skips
/// are not delivered, and finishing the batch passes over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these event types.
    pub ev_types: Vec<String>,
    /// Only events whose extra1 (the table name for pgq triggers) is one of these.
    pub extra1: Vec<String>,
    /// Only events whose extra2 is one of these.
    pub extra2: Vec<String>,
    /// Only events whose extra3 is one of these.
    pub extra3: Vec<String>,
    /// Only events whose extra4 is one of these.
    pub extra4: Vec<String>,
}

impl EventFilter {
    /// True when the filter selects every event.
    pub fn is_empty(&self) -> bool {
        self.ev_types.is_empty()
            && self.extra1.is_empty()
            && self.extra2.is_empty()
            && self.extra3.is_empty()
            && self.extra4.is_empty()
    }

    /// Whether an event passes the filter (the same rule the database applies).
    pub fn matches(&self, ev: &Event) -> bool {
        fn ok(list: &[String], v: &Option<String>) -> bool {
            list.is_empty() || v.as_ref().is_some_and(|v| list.contains(v))
        }
        ok(&self.ev_types, &ev.ev_type)
            && ok(&self.extra1, &ev.ev_extra1)
            && ok(&self.extra2, &ev.ev_extra2)
            && ok(&self.extra3, &ev.ev_extra3)
            && ok(&self.extra4, &ev.ev_extra4)
    }
}

/// A batch's event query with `filter` applied: the SQL, and the five lists to bind as `$1..$5`
/// (`None` when the filter is empty and the query has no parameters).
pub(crate) fn filtered_batch_query<'f>(
    batch_sql: &str,
    filter: &'f EventFilter,
) -> (String, Option<[&'f Vec<String>; 5]>) {
    if filter.is_empty() {
        return (batch_sql.to_owned(), None);
    }
    let wrapped = format!(
        "select * from ({batch_sql}) ev where \
         (cardinality($1::text[]) = 0 or ev.ev_type = any($1)) and \
         (cardinality($2::text[]) = 0 or ev.ev_extra1 = any($2)) and \
         (cardinality($3::text[]) = 0 or ev.ev_extra2 = any($3)) and \
         (cardinality($4::text[]) = 0 or ev.ev_extra3 = any($4)) and \
         (cardinality($5::text[]) = 0 or ev.ev_extra4 = any($5)) \
         order by ev.ev_id"
    );
    let binds = [
        &filter.ev_types,
        &filter.extra1,
        &filter.extra2,
        &filter.extra3,
        &filter.extra4,
    ];
    (wrapped, Some(binds))
}

/// Stream a batch's events with bounded memory, whatever the batch size.
///
/// Runs the batch's event query (`pgq.batch_event_sql`) as one streaming statement on `conn`:
/// rows are decoded as they arrive, so memory stays flat for millions of events. Works on a plain
/// connection, or on a transaction's connection (exactly-once consumers). Events come in no
/// particular order (as in pgq). `filter` values are bound as parameters.
///
/// Needs `pgq_reader`.
pub async fn stream_batch_events<'c>(
    conn: &'c mut PgConnection,
    batch: BatchId,
    filter: &EventFilter,
) -> Result<BoxStream<'c, Result<Event>>> {
    let sql = batch_event_sql(&mut *conn, batch).await?;
    let (sql, binds) = filtered_batch_query(&sql, filter);
    // Each batch has its own SQL text: not worth a slot in the connection's statement cache.
    let mut q = sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql)).persistent(false);
    for list in binds.into_iter().flatten() {
        q = q.bind(list.clone());
    }
    Ok(q.fetch(conn)
        .map_ok(Event::from)
        .map_err(move |e| batch_ctx(Error::from_sqlx(e, EVENTS), batch))
        .boxed())
}

/// Detailed information about a batch (`pgq.get_batch_info`).
///
/// Needs `pgq_reader`.
pub async fn get_batch_info<'e>(ex: impl PgExecutor<'e>, batch: BatchId) -> Result<BatchDetails> {
    const OP: Op = Op::reader("get_batch_info");
    let r = sqlx::query!(r#"select * from pgq.get_batch_info($1)"#, batch.0)
        .fetch_optional(ex)
        .await
        .op(OP)?;
    let r = r
        .filter(|r| r.queue_name.is_some())
        .ok_or(Error::BatchNotFound {
            op: OP.name,
            batch: batch.0,
            source: None,
        })?;
    Ok(BatchDetails {
        queue_name: r.queue_name.unwrap_or_default(),
        consumer_name: r.consumer_name.unwrap_or_default(),
        batch_start: r.batch_start.unwrap_or_default(),
        batch_end: r.batch_end.unwrap_or_default(),
        prev_tick_id: TickId(r.prev_tick_id.unwrap_or_default()),
        tick_id: TickId(r.tick_id.unwrap_or_default()),
        lag: opt_interval(r.lag),
        seq_start: r.seq_start.unwrap_or_default(),
        seq_end: r.seq_end.unwrap_or_default(),
    })
}

/// Who owns a batch: the queue and consumer names of an open batch, or `None` when no
/// subscription holds it. Use it to check that a batch belongs to a consumer before finishing.
///
/// Needs no pgq role.
pub async fn batch_owner<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
) -> Result<Option<(String, String)>> {
    let r = query_subscriptions!(
        query,
        "select queue_name, co_name from subscriptions where sub_batch = $1",
        batch.0
    )
    .fetch_optional(ex)
    .await
    .op(OWNER)?;
    Ok(r.map(|r| (r.queue_name, r.co_name)))
}

/// [`batch_owner`], or fail with [`crate::ErrorKind::BatchNotFound`] when no subscription holds
/// the batch (finished, or never existed): for callers about to work on the batch.
///
/// Needs no pgq role.
pub async fn require_batch_owner<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
) -> Result<(String, String)> {
    batch_owner(ex, batch)
        .await?
        .ok_or_else(|| Error::BatchNotFound {
            op: OWNER.name,
            batch: batch.0,
            source: None,
        })
}

/// Put one event of a batch into the retry queue, to come back at `at`
/// (`pgq.event_retry(batch, event, timestamptz)`). Returns `false` when it was already there.
///
/// Needs `pgq_reader`.
pub async fn event_retry_at<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    event: EventId,
    at: DateTime<Utc>,
) -> Result<bool> {
    let r = sqlx::query_scalar!(
        r#"select pgq.event_retry($1, $2, $3::timestamptz) as "r!""#,
        batch.0,
        event.0,
        at
    )
    .fetch_one(ex)
    .await
    .op(RETRY)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(r == 1)
}

/// Put one event of a batch into the retry queue, to come back after `after` (whole seconds,
/// rounded up) (`pgq.event_retry(batch, event, seconds)`). Returns `false` when it was already
/// there.
///
/// Needs `pgq_reader`.
pub async fn event_retry<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    event: EventId,
    after: Duration,
) -> Result<bool> {
    let secs = retry_seconds(after)?;
    let r = sqlx::query_scalar!(
        r#"select pgq.event_retry($1, $2, $3::int4) as "r!""#,
        batch.0,
        event.0,
        secs
    )
    .fetch_one(ex)
    .await
    .op(RETRY)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(r == 1)
}

fn retry_seconds(after: Duration) -> Result<i32> {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    i32::try_from(secs).map_err(|_| Error::invalid_input(RETRY, "retry delay too long"))
}

/// Put an event straight into a consumer's retry queue with every column given
/// (`pgq.event_retry_raw`). Returns the event id. Needs `pgq_admin`.
pub async fn event_retry_raw<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    retry_after: DateTime<Utc>,
    event: &Event,
) -> Result<EventId> {
    const OP: Op = Op::admin("event_retry_raw");
    let id = sqlx::query_scalar!(
        r#"select pgq.event_retry_raw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) as "id!""#,
        queue.as_str(),
        consumer.as_str(),
        retry_after,
        event.ev_id,
        event.ev_time,
        event.ev_retry,
        event.ev_type,
        event.ev_data,
        event.ev_extra1,
        event.ev_extra2,
        event.ev_extra3,
        event.ev_extra4
    )
    .fetch_one(ex)
    .await
    .op(OP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(EventId(id))
}

/// Put every event of a batch into the retry queue (`pgq.batch_retry`). Returns how many.
///
/// Needs `pgq_reader`.
pub async fn batch_retry<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    after: Duration,
) -> Result<i32> {
    let secs = retry_seconds(after)?;
    sqlx::query_scalar!(r#"select pgq.batch_retry($1, $2) as "r!""#, batch.0, secs)
        .fetch_one(ex)
        .await
        .op(RETRY)
        .map_err(|e| batch_ctx(e, batch))
}

/// Finish a batch (`pgq.finish_batch`): the consumer moves past it. A batch that is not open
/// (already finished, or never existed) is [`crate::ErrorKind::BatchNotFound`].
///
/// Needs `pgq_reader`.
pub async fn finish_batch<'e>(ex: impl PgExecutor<'e>, batch: BatchId) -> Result<()> {
    let r = sqlx::query_scalar!(r#"select pgq.finish_batch($1) as "r!""#, batch.0)
        .fetch_one(ex)
        .await
        .op(FINISH)?;
    if r == 1 {
        Ok(())
    } else {
        Err(Error::batch_not_open(batch))
    }
}

impl Error {
    /// [`crate::ErrorKind::BatchNotFound`] as [`finish_batch`] reports a batch that is not open:
    /// for callers that found so themselves (e.g. their batch was finished and handed out again
    /// before their own finish).
    pub fn batch_not_open(batch: BatchId) -> Error {
        Error::BatchNotFound {
            op: FINISH.name,
            batch: batch.0,
            source: None,
        }
    }
}

/// Finish `batch` only if `consumer` holds it on `queue`: the ownership check and
/// `pgq.finish_batch` in one statement. `false` (nothing finished) when the batch is not open, or
/// is held by another consumer or queue; [`batch_owner`] tells which.
///
/// Needs `pgq_reader`.
pub async fn finish_own_batch<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<bool> {
    let r = query_subscriptions!(
        query_scalar,
        r#"select pgq.finish_batch(sub_batch) as "r!" from subscriptions
            where sub_batch = $1 and queue_name = $2 and co_name = $3"#,
        batch.0,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_optional(ex)
    .await
    .op(FINISH)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(r == Some(1))
}
