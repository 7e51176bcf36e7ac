//! A queue's consumers: registration, and what pgq knows about each consumer.
//!
//! Roles: registration needs `pgq_reader`; the consumer information functions need no pgq role.

use sqlx::PgExecutor;

use crate::error::{Error, Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::queue::with_queue;
use crate::types::{BatchId, ConsumerInfo, TickId, interval_to_duration, opt_interval};

const REGISTER: Op = Op::reader("register_consumer");
const UNREGISTER: Op = Op::reader("unregister_consumer");
const CONSUMER_INFO: Op = Op::public("get_consumer_info");

/// Register a consumer on a queue at its latest tick (`pgq.register_consumer`).
/// Returns `true` when newly registered, `false` when it already was.
///
/// Needs `pgq_reader`.
pub async fn register_consumer<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<bool> {
    let r = sqlx::query_scalar!(
        r#"select pgq.register_consumer($1, $2) as "r!""#,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_one(ex)
    .await
    .op(REGISTER)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r == 1)
}

/// Register a consumer at a given tick, or move an existing consumer there (rewind or skip
/// ahead) (`pgq.register_consumer_at`). Returns `true` when newly registered.
///
/// Needs `pgq_reader`.
pub async fn register_consumer_at<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    tick: TickId,
) -> Result<bool> {
    let r = sqlx::query_scalar!(
        r#"select pgq.register_consumer_at($1, $2, $3) as "r!""#,
        queue.as_str(),
        consumer.as_str(),
        tick.0
    )
    .fetch_one(ex)
    .await
    .op(REGISTER)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r == 1)
}

/// Register a consumer unless it is registered already, atomically
/// (`pgq_rs.register_consumer`): at `tick`, or at the queue's latest tick when `None`. An
/// existing consumer is never moved, even when another process registers the same name at the
/// same moment (the check and the registration hold a lock on the queue and consumer name).
/// Returns `true` when it registered now.
///
/// Needs `pgq_reader`.
pub async fn register_consumer_if_new<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    tick: Option<TickId>,
) -> Result<bool> {
    let r = sqlx::query_scalar!(
        r#"select pgq_rs.register_consumer($1, $2, $3) as "r!""#,
        queue.as_str(),
        consumer.as_str(),
        tick.map(|t| t.0)
    )
    .fetch_one(ex)
    .await
    .op(REGISTER)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r == 1)
}

/// Unregister a consumer (`pgq_rs.unregister_consumer`, around `pgq.unregister_consumer`); its
/// batch in progress, its retry events and, for a cooperative group, its members go with it.
/// A cooperative member (`group.member`) holding a batch returns the batch's events to its group
/// first (through the retry queue), as [`crate::coop_unregister_member`] with
/// [`crate::BatchHandling::ReturnToGroup`] does. Returns how many subscriptions were removed.
///
/// Needs `pgq_reader`.
pub async fn unregister_consumer<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<i32> {
    sqlx::query_scalar!(
        r#"select pgq_rs.unregister_consumer($1, $2) as "r!""#,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_one(ex)
    .await
    .op(UNREGISTER)
    .map_err(|e| with_queue(e, queue))
}

macro_rules! consumer_row {
    ($r:expr) => {{
        let r = $r;
        ConsumerInfo {
            queue_name: r.queue_name.unwrap_or_default(),
            consumer_name: r.consumer_name.unwrap_or_default(),
            lag: r.lag.as_ref().map(interval_to_duration),
            last_seen: opt_interval(r.last_seen),
            last_tick: r.last_tick.map(TickId),
            current_batch: r.current_batch.map(BatchId),
            next_tick: r.next_tick.map(TickId),
            pending_events: r.pending_events.unwrap_or_default(),
        }
    }};
}

/// Every consumer on every queue (`pgq.get_consumer_info()`). Needs no pgq role.
pub async fn get_consumer_info_all<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<ConsumerInfo>> {
    let rows = sqlx::query!(r#"select * from pgq.get_consumer_info()"#)
        .fetch_all(ex)
        .await
        .op(CONSUMER_INFO)?;
    Ok(rows.into_iter().map(|r| consumer_row!(r)).collect())
}

/// Every consumer on one queue (`pgq.get_consumer_info(queue)`). Needs no pgq role.
pub async fn get_consumer_info_queue<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
) -> Result<Vec<ConsumerInfo>> {
    let rows = sqlx::query!(r#"select * from pgq.get_consumer_info($1)"#, queue.as_str())
        .fetch_all(ex)
        .await
        .op(CONSUMER_INFO)?;
    Ok(rows.into_iter().map(|r| consumer_row!(r)).collect())
}

/// One consumer (`pgq.get_consumer_info(queue, consumer)`); `None` when it is not registered.
/// Needs no pgq role.
pub async fn get_consumer_info<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<Option<ConsumerInfo>> {
    let r = sqlx::query!(
        r#"select * from pgq.get_consumer_info($1, $2)"#,
        queue.as_str(),
        consumer.as_str()
    )
    .fetch_optional(ex)
    .await
    .op(CONSUMER_INFO)?;
    Ok(r.map(|r| consumer_row!(r)))
}

/// [`get_consumer_info`], or fail with [`crate::ErrorKind::ConsumerNotRegistered`]: for callers
/// about to rely on the consumer. Needs no pgq role.
pub async fn require_consumer_info<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
) -> Result<ConsumerInfo> {
    get_consumer_info(ex, queue, consumer)
        .await?
        .ok_or_else(Error::consumer_not_registered)
}

impl Error {
    /// [`crate::ErrorKind::ConsumerNotRegistered`] as [`require_consumer_info`] reports it: for
    /// callers that found so themselves (a `None` from [`get_consumer_info`], nothing removed by
    /// [`unregister_consumer`]).
    pub fn consumer_not_registered() -> Error {
        Error::ConsumerNotRegistered {
            op: CONSUMER_INFO.name,
            source: None,
        }
    }
}
