//! Who takes the batches of a queue: a plain consumer or a member of a cooperative group. The
//! one seam every batch reader goes through (the consumer runtime's sources and `pgq tail`):
//! the next batch and its finish, whichever kind of consumer takes it.

use std::time::Duration;

use sqlx::PgConnection;

use crate::BatchTuning;
use crate::error::Result;
use crate::name::{ConsumerName, QueueName};
use crate::types::{BatchId, BatchInfo};

/// Who takes batches of a queue.
///
/// ```no_run
/// use pgq_core::{BatchTaker, BatchTuning, ConsumerName, QueueName};
///
/// # async fn demo(conn: &mut sqlx::PgConnection) -> Result<(), Box<dyn std::error::Error>> {
/// let taker = BatchTaker::member(
///     QueueName::new("orders")?,
///     ConsumerName::new("billing")?,  // the group
///     ConsumerName::new("worker-1")?, // this member
/// );
/// if let Some(batch) = taker.next_batch(&mut *conn, BatchTuning::default()).await? {
///     // read the events of batch.batch_id ...
///     taker.finish_batch(&mut *conn, batch.batch_id).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchTaker {
    /// A plain consumer: `pgq.next_batch_custom` / `pgq.finish_batch`.
    Consumer {
        /// The queue.
        queue: QueueName,
        /// The consumer.
        consumer: ConsumerName,
    },
    /// A member of a cooperative group: `pgq_coop.next_batch_custom` / `pgq_coop.finish_batch`
    /// (the batches are held by the pgq consumer `group.member`).
    Member {
        /// The queue.
        queue: QueueName,
        /// The group (the pgq consumer whose position the members share).
        group: ConsumerName,
        /// The member's name within the group.
        member: ConsumerName,
        /// Take over the batch of a member silent for longer than this (see
        /// [`crate::coop_next_batch`]); `None`: no takeover.
        dead_interval: Option<Duration>,
    },
}

impl BatchTaker {
    /// The plain consumer `consumer` of `queue`.
    pub fn consumer(queue: QueueName, consumer: ConsumerName) -> BatchTaker {
        BatchTaker::Consumer { queue, consumer }
    }

    /// Member `member` of the cooperative group `group` on `queue`, without takeover.
    pub fn member(queue: QueueName, group: ConsumerName, member: ConsumerName) -> BatchTaker {
        BatchTaker::Member {
            queue,
            group,
            member,
            dead_interval: None,
        }
    }

    /// The queue.
    pub fn queue(&self) -> &QueueName {
        match self {
            BatchTaker::Consumer { queue, .. } | BatchTaker::Member { queue, .. } => queue,
        }
    }

    /// The next batch, or `None` when there is none yet. Until finished, the same batch is
    /// returned again.
    ///
    /// Needs `pgq_reader`.
    pub async fn next_batch(
        &self,
        conn: &mut PgConnection,
        tuning: BatchTuning,
    ) -> Result<Option<BatchInfo>> {
        match self {
            BatchTaker::Consumer { queue, consumer } => {
                crate::next_batch_custom(conn, queue, consumer, tuning).await
            }
            BatchTaker::Member {
                queue,
                group,
                member,
                dead_interval,
            } => {
                let id = crate::coop_next_batch(
                    &mut *conn,
                    queue,
                    group,
                    member,
                    tuning,
                    *dead_interval,
                )
                .await?;
                match id {
                    Some(id) => batch_info(conn, id).await.map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// Finish `batch` (inside the transaction that read it, when there is one).
    ///
    /// Needs `pgq_reader`.
    pub async fn finish_batch(&self, conn: &mut PgConnection, batch: BatchId) -> Result<()> {
        match self {
            BatchTaker::Consumer { .. } => crate::finish_batch(conn, batch).await,
            BatchTaker::Member { .. } => crate::coop_finish_batch(conn, batch).await,
        }
    }
}

/// The ids, ticks and times of an open batch (`pgq.get_batch_info`), as the next-batch
/// functions return them.
///
/// Needs `pgq_reader`.
pub async fn batch_info(conn: &mut PgConnection, batch: BatchId) -> Result<BatchInfo> {
    let d = crate::get_batch_info(conn, batch).await?;
    Ok(BatchInfo {
        batch_id: batch,
        cur_tick_id: d.tick_id,
        prev_tick_id: d.prev_tick_id,
        cur_tick_time: d.batch_end,
        prev_tick_time: d.batch_start,
        cur_tick_event_seq: d.seq_end,
        prev_tick_event_seq: d.seq_start,
    })
}
