//! Where batches come from: the [`BatchSource`] abstraction and the plain [`Subscription`].
//!
//! The batch, handler, retry and run-loop machinery only needs a source to hand out the next
//! batch and to finish it; reading events and retrying them are the same pgq operations for every
//! kind of consumer. A cooperative group member ([`crate::CoopMember`]) is another source.

use std::future::Future;
use std::time::Duration;

use pgq_core::sqlx::{PgConnection, PgPool};
use pgq_core::{BatchId, BatchInfo, BatchTuning, ConsumerName, QueueName, TickId};

use crate::config::{ReadAhead, Registration};
use crate::error::{Error, Result};
use crate::row_hint::RowSlot;

/// A source of batches for one consumer identity on one queue.
pub trait BatchSource: Send + Sync + 'static {
    /// The queue the batches come from.
    fn queue(&self) -> &QueueName;

    /// The consumer name that holds the batches in `pgq.subscription` (for a cooperative member,
    /// its `group.member` name).
    fn consumer(&self) -> &ConsumerName;

    /// The next batch, or `None` when there is none yet. Until finished, the same batch is
    /// returned again.
    fn next_batch(
        &self,
        conn: &mut PgConnection,
        tuning: BatchTuning,
    ) -> impl Future<Output = pgq_core::Result<Option<BatchInfo>>> + Send;

    /// Register this consumer identity if it is not registered yet, where `registration` says;
    /// `true` when it registered now.
    fn register(
        &self,
        pool: &PgPool,
        registration: &Registration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Unregister this consumer identity.
    fn unregister(&self, pool: &PgPool) -> impl Future<Output = Result<()>> + Send;

    /// Finish a batch (inside the batch's transaction).
    fn finish_batch(
        &self,
        conn: &mut PgConnection,
        batch: BatchId,
    ) -> impl Future<Output = pgq_core::Result<()>> + Send;

    /// Finish `batch` if this source's consumer holds it (inside the batch's transaction):
    /// [`BatchSource::check_owner`], then [`BatchSource::finish_batch`]. Sources that can check
    /// and finish in one statement override it.
    fn finish_owned(
        &self,
        conn: &mut PgConnection,
        batch: BatchId,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.check_owner(&mut *conn, batch).await?;
            self.finish_batch(conn, batch).await?;
            Ok(())
        }
    }

    /// Whether a run loop delivering at least once (without filters) runs on this source, and
    /// when it may read ahead of an open batch instead of finishing it (see [`ReadAhead`],
    /// [`BatchSource::ahead_range`]); [`ReadAhead::Off`] again when the loop ends. The default
    /// ignores it.
    fn read_ahead(&self, mode: ReadAhead) {
        let _ = mode;
    }

    /// When `info` (from [`BatchSource::next_batch`]) is a part read ahead of the open batch
    /// `info.batch_id` rather than the batch itself: the ticks its events are between (its
    /// events come from `pgq_core::stream_events_beyond`). The default: never.
    fn ahead_range(&self, info: &BatchInfo) -> Option<(TickId, TickId)> {
        let _ = info;
        None
    }

    /// `info` is about to be finished in its transaction, before its retries are written;
    /// `failed`: some of its events are retried or dead-lettered. The default does nothing.
    fn before_finish(
        &self,
        conn: &mut PgConnection,
        info: &BatchInfo,
        failed: bool,
    ) -> impl Future<Output = pgq_core::Result<()>> + Send {
        let _ = (conn, info, failed);
        async { Ok(()) }
    }

    /// The transaction that finished a batch (through [`BatchSource::finish_owned`]) committed.
    /// A source that opens the next batch while finishing hands it out from now on; the default
    /// does nothing.
    fn batch_committed(&self) {}

    /// How often the run loop calls [`BatchSource::touch`] while it holds a batch; `None` (the
    /// default) for sources that need no heartbeat.
    fn heartbeat_interval(&self) -> Option<Duration> {
        None
    }

    /// How many heartbeats in a row may pass without progress (no event read or handled) before
    /// the run loop stops touching, so that a hung handler's batch can be taken over; `None` (the
    /// default): touch as long as the batch is held.
    fn stall_heartbeats(&self) -> Option<u32> {
        None
    }

    /// Heartbeat: tell the database this consumer is alive. The run loop calls it from a
    /// background task on a connection of its own (never the batch's), every
    /// [`heartbeat_interval`](BatchSource::heartbeat_interval) while a batch is in flight.
    fn touch(&self, conn: &mut PgConnection) -> impl Future<Output = pgq_core::Result<()>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Called once when the run loop stops on shutdown (not when it fails): release what this
    /// consumer identity holds. The default does nothing.
    fn leave(&self, pool: &PgPool) -> impl Future<Output = Result<()>> + Send {
        let _ = pool;
        async { Ok(()) }
    }

    /// Check that `batch` is held by this source's consumer on its queue:
    /// [`Error::ForeignBatch`] when another consumer holds it, `BatchNotFound` when nobody does.
    fn check_owner(
        &self,
        conn: &mut PgConnection,
        batch: BatchId,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let (q, c) = pgq_core::require_batch_owner(&mut *conn, batch).await?;
            if q == self.queue().as_str() && c == self.consumer().as_str() {
                return Ok(());
            }
            Err(Error::ForeignBatch {
                batch,
                queue: self.queue().to_string(),
                consumer: self.consumer().to_string(),
                owner_queue: q,
                owner_consumer: c,
            })
        }
    }
}

/// A plain (non-cooperative) pgq subscription: `pgq.next_batch_custom` / `pgq.finish_batch`.
/// Needs `pgq_reader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    queue: QueueName,
    consumer: ConsumerName,
    /// Where its `pgq.subscription` row was last written (see `row_hint`).
    row: RowSlot,
}

impl Subscription {
    /// The subscription of `consumer` on `queue`.
    pub fn new(queue: QueueName, consumer: ConsumerName) -> Self {
        Subscription {
            queue,
            consumer,
            row: RowSlot::default(),
        }
    }
}

impl BatchSource for Subscription {
    fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn next_batch(
        &self,
        conn: &mut PgConnection,
        tuning: BatchTuning,
    ) -> pgq_core::Result<Option<BatchInfo>> {
        self.row
            .next_batch(conn, &self.queue, &self.consumer, tuning)
            .await
    }

    async fn register(&self, pool: &PgPool, registration: &Registration) -> Result<bool> {
        register_plain(pool, &self.queue, &self.consumer, registration).await
    }

    async fn unregister(&self, pool: &PgPool) -> Result<()> {
        pgq_core::unregister_consumer(pool, &self.queue, &self.consumer).await?;
        Ok(())
    }

    async fn finish_batch(&self, conn: &mut PgConnection, batch: BatchId) -> pgq_core::Result<()> {
        pgq_core::finish_batch(conn, batch).await
    }

    fn batch_committed(&self) {
        self.row.committed();
    }

    fn read_ahead(&self, mode: ReadAhead) {
        self.row.read_ahead(mode);
    }

    fn ahead_range(&self, info: &BatchInfo) -> Option<(TickId, TickId)> {
        self.row.ahead_range(info)
    }

    async fn before_finish(
        &self,
        conn: &mut PgConnection,
        info: &BatchInfo,
        failed: bool,
    ) -> pgq_core::Result<()> {
        self.row
            .before_finish(conn, info, failed, &self.queue, &self.consumer)
            .await
    }

    /// What was read ahead of the open batch is written (finished) before the loop stops, so
    /// that a restart does not deliver it again (when that fails, it is logged: those events
    /// come again).
    async fn leave(&self, pool: &PgPool) -> Result<()> {
        if !self.row.reading_ahead() {
            return Ok(());
        }
        let written = async {
            let mut conn = pool.acquire().await?;
            self.row
                .write_reached(&mut conn, &self.queue, &self.consumer)
                .await?;
            Ok::<_, Error>(())
        };
        if let Err(e) = written.await {
            // Not written: the events read ahead come again after a restart (at least once).
            tracing::warn!(queue = %self.queue, consumer = %self.consumer, error = %e,
                "could not write what was read ahead before stopping; those events come again");
        }
        Ok(())
    }

    /// The ownership check and `pgq.finish_batch` in one statement; only when nothing was
    /// finished is the owner looked up, for the error.
    async fn finish_owned(&self, conn: &mut PgConnection, batch: BatchId) -> Result<()> {
        if self
            .row
            .finish_own(&mut *conn, batch, &self.queue, &self.consumer)
            .await?
        {
            return Ok(());
        }
        self.check_owner(&mut *conn, batch).await?;
        // Held by this consumer after all: it was finished and handed out again in between.
        Err(Error::Core(pgq_core::Error::batch_not_open(batch)))
    }
}

/// Register the plain consumer `c` on `q` where `registration` says, unless it is registered
/// already (or `registration` is [`Registration::Existing`]); `true` when it registered now.
///
/// The registration itself is atomic (`pgq_core::register_consumer_if_new`): when several
/// processes register the same consumer at once, one registers it and the others leave it where
/// it is — never moved back to `registration`'s tick once it has consumed batches.
pub(crate) async fn register_plain(
    pool: &PgPool,
    q: &QueueName,
    c: &ConsumerName,
    registration: &Registration,
) -> Result<bool> {
    // A cheap first look; the decision is taken again atomically below.
    if *registration == Registration::Existing
        || pgq_core::get_consumer_info(pool, q, c).await?.is_some()
    {
        return Ok(false);
    }
    let tick = match registration {
        Registration::AtTick(tick) => Some(*tick),
        Registration::AtConsumer(other) => {
            let tick = pgq_core::get_consumer_info(pool, q, other)
                .await?
                .and_then(|i| i.last_tick)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "cannot register {c} at the position of consumer {other}: it is not \
                         registered on queue {q}"
                    ))
                })?;
            Some(tick)
        }
        _ => None,
    };
    Ok(pgq_core::register_consumer_if_new(pool, q, c, tick).await?)
}
