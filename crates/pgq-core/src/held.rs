//! Batches that stay cheap while a session holds the xmin horizon (our migrations `…10`–`…12`):
//! the consumer's `pgq.subscription` row found through a hint instead of its key, a batch finished
//! and the next opened in one update, and reading ahead past an open batch's end without writing
//! the row at all. The rows written are the ones pgq writes; pgq clients see no difference.

use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::{PgConnection, PgExecutor};

use crate::consume::{batch_ctx, batch_info};
use crate::error::{Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::queue::with_queue;
use crate::sql::query_batch_events;
use crate::types::{BatchId, BatchInfo, Event, TickId};

const NEXT: Op = Op::reader("next_batch");
const EVENTS: Op = Op::reader("get_batch_events");
const FINISH: Op = Op::reader("finish_batch");

/// `batch_info` of a row with pgq's batch columns (`batch_id`, `cur_tick_id`, ...), as
/// `pgq_rs.next_batch_at` and `pgq_rs.finish_next_batch_at` return them.
macro_rules! batch_info_of {
    ($r:expr) => {
        batch_info(
            $r.batch_id,
            $r.cur_tick_id,
            $r.prev_tick_id,
            $r.cur_tick_time,
            $r.prev_tick_time,
            $r.cur_tick_event_seq,
            $r.prev_tick_event_seq,
        )
    };
}

/// Where a consumer's `pgq.subscription` row was last seen (its ctid), so that the next
/// [`next_batch_at`] finds it with one lookup instead of walking every version of the row that a
/// held xmin horizon keeps (see [`next_batch_at`]). Only a hint: a stale one is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHint(String);

/// The next batch like [`crate::next_batch_custom`] without conditions, but cheap while a session holds
/// the xmin horizon, and able to span several ticks (`pgq_rs.next_batch_at`, our migration
/// `…10_held_horizon`).
///
/// Every batch updates the consumer's `pgq.subscription` row twice, and while the horizon is held
/// no old version can be removed: `pgq.next_batch*` finds the row through its key and visits
/// every version, so each batch costs more than the one before. Passing the [`RowHint`] returned
/// by the previous call (or by [`finish_own_batch_at`]) finds the current version directly.
///
/// With `max_events > 0` a consumer that is several ticks behind gets one batch up to the newest
/// tick whose events (estimated from the event sequence) are at most `max_events`, but always at
/// least the next tick, as `pgq.next_batch_custom` spans ticks with `min_count`. With 0, the
/// next tick only, as `pgq.next_batch`. The rows written are the ones pgq writes.
///
/// Returns the batch (or `None`) and the hint for the next call. A schema without the migration
/// is [`crate::ErrorKind::PgqNotInstalled`]: fall back to [`crate::next_batch_custom`].
///
/// Needs `pgq_reader`.
pub async fn next_batch_at<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    hint: Option<&RowHint>,
    max_events: i64,
) -> Result<(Option<BatchInfo>, Option<RowHint>)> {
    let r = sqlx::query!(
        r#"select * from pgq_rs.next_batch_at($1, $2, $3, $4)"#,
        queue.as_str(),
        consumer.as_str(),
        hint.map(|h| h.0.as_str()),
        max_events
    )
    .fetch_one(ex)
    .await
    .op(NEXT)
    .map_err(|e| with_queue(e, queue))?;
    Ok((batch_info_of!(r), r.hint.map(RowHint)))
}

/// What [`finish_next_batch_at`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinishedNext {
    /// Whether the batch was finished (`false`: the consumer does not hold it; nothing changed).
    pub finished: bool,
    /// The next batch, opened in the same update, when a later tick existed.
    pub next: Option<BatchInfo>,
    /// Where the consumer's row is now, for the next [`next_batch_at`].
    pub hint: Option<RowHint>,
}

/// [`finish_own_batch_at`] and then [`next_batch_at`] (`max_events` as there) in **one** update
/// of the consumer's `pgq.subscription` row (`pgq_rs.finish_next_batch_at`, migration
/// `…11_finish_next`): when a later tick exists, the row goes straight from this batch to the
/// next one, one row version per batch instead of two — half the versions a held xmin horizon
/// keeps, each later update cheaper for it. The rows end as pgq's own `finish_batch` and
/// `next_batch_custom` would leave them.
///
/// With `reached`, the batch is finished as if it had ended at that later tick, up to which its
/// holder read ahead ([`batch_reach`], [`stream_events_beyond`]); `finished` is `false` when
/// `reached` is before the batch's end or not a tick of the queue.
///
/// The next batch is opened in the caller's transaction: it exists once that commits. A schema
/// without the migration (`…12_reach_ahead`) is [`crate::ErrorKind::PgqNotInstalled`].
///
/// Needs `pgq_reader`.
pub async fn finish_next_batch_at<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    queue: &QueueName,
    consumer: &ConsumerName,
    max_events: i64,
    reached: Option<TickId>,
) -> Result<FinishedNext> {
    let r = sqlx::query!(
        r#"select finished as "finished!", batch_id, cur_tick_id, prev_tick_id, cur_tick_time,
                  prev_tick_time, cur_tick_event_seq, prev_tick_event_seq, hint
             from pgq_rs.finish_next_batch_at($1, $2, $3, $4, $5)"#,
        batch.0,
        queue.as_str(),
        consumer.as_str(),
        max_events,
        reached.map(|t| t.0)
    )
    .fetch_one(ex)
    .await
    .op(FINISH)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(FinishedNext {
        finished: r.finished,
        next: batch_info_of!(r),
        hint: r.hint.map(RowHint),
    })
}

/// Whether this database has [`finish_next_batch_at`] and the reading ahead of
/// [`batch_reach`] (migration `…12_reach_ahead`). Needs no pgq role.
pub async fn has_finish_next<'e>(ex: impl PgExecutor<'e>) -> Result<bool> {
    sqlx::query_scalar!(
        r#"select to_regprocedure('pgq_rs.finish_next_batch_at(int8, text, text, int8, int8)')
                  is not null as "has!""#
    )
    .fetch_one(ex)
    .await
    .op(FINISH)
}

/// [`crate::finish_own_batch`] that also returns the [`RowHint`] of the consumer's row after the
/// finish (`pgq_rs.finish_batch_at`): `None` when nothing was finished (the batch is not open,
/// or is held by another consumer or queue; [`crate::batch_owner`] tells which). The row is changed
/// exactly as `pgq.finish_batch` changes it.
///
/// Needs `pgq_reader`.
pub async fn finish_own_batch_at<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<Option<RowHint>> {
    let r = sqlx::query_scalar!(
        r#"select pgq_rs.finish_batch_at($1, $2, $3) as hint"#,
        batch.0,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_one(ex)
    .await
    .op(FINISH)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(r.map(RowHint))
}

/// How far the holder of open `batch`, having delivered its events up to tick `from` (its end,
/// or a later tick it read ahead to), may read ahead now (`pgq_rs.batch_reach`): a
/// [`BatchInfo`] with `batch`'s id from `from` to the next tick, or with `max_events > 0` to the
/// newest tick within about `max_events` more events; `None` when there is no later tick. The
/// batch stays open and its row untouched: nothing is written.
///
/// While a session holds the xmin horizon every write of a consumer's row leaves a version that
/// makes each later write dearer; a consumer that reads ahead delivers new events with no write,
/// and finishes with [`finish_next_batch_at`] (`reached`) now and then. Until then the row says
/// the batch is open from its start: a consumer that stops gets those events again (at least
/// once). [`crate::ErrorKind::BatchNotFound`] when nobody holds `batch`.
///
/// Needs `pgq_reader`.
pub async fn batch_reach<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    from: TickId,
    max_events: i64,
) -> Result<Option<BatchInfo>> {
    let r = sqlx::query!(
        r#"select * from pgq_rs.batch_reach($1, $2, $3)"#,
        batch.0,
        from.0,
        max_events
    )
    .fetch_one(ex)
    .await
    .op(NEXT)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(batch_info_of!(r))
}

/// Stream the events between ticks `from` and `to` of the queue of open `batch`, for its holder
/// (`pgq_rs.batch_events_beyond`): exactly what a batch from `from` to `to` would hold (new
/// events, and this consumer's retried ones), in event id order. `from` must be at or after the
/// batch's end (from [`batch_reach`]). Nothing is written.
///
/// Needs `pgq_reader`.
pub async fn stream_events_beyond<'c>(
    conn: &'c mut PgConnection,
    batch: BatchId,
    from: TickId,
    to: TickId,
) -> Result<BoxStream<'c, Result<Event>>> {
    Ok(query_batch_events!(
        "pgq_rs.batch_events_beyond($1, $2, $3)",
        batch.0,
        from.0,
        to.0
    )
    .fetch(conn)
    .map_err(move |e| batch_ctx(crate::Error::from_sqlx(e, EVENTS), batch))
    .boxed())
}

/// Make open `batch` of `consumer` on `queue` end at the later tick `to` (`pgq_rs.extend_batch_at`),
/// so that events read ahead up to `to` are part of it (to retry them with
/// [`crate::event_retry`]). Returns the [`RowHint`] of the row afterwards; `None` when the
/// consumer does not hold that batch or `to` is not a tick at or after its end.
///
/// Needs `pgq_reader`.
pub async fn extend_batch_at<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    queue: &QueueName,
    consumer: &ConsumerName,
    to: TickId,
) -> Result<Option<RowHint>> {
    let r = sqlx::query_scalar!(
        r#"select pgq_rs.extend_batch_at($1, $2, $3, $4) as hint"#,
        batch.0,
        queue.as_str(),
        consumer.as_str(),
        to.0
    )
    .fetch_one(ex)
    .await
    .op(FINISH)
    .map_err(|e| batch_ctx(e, batch))?;
    Ok(r.map(RowHint))
}
