//! # pgq-consumer
//!
//! The consumer runtime of PgQ for Rust, on top of [`pgq_core`]: batches read with bounded
//! memory, async handlers, retries with backoff and durable dead letters, exactly-once delivery,
//! and wakeups within milliseconds of a new tick.
//!
//! ```no_run
//! use pgq_consumer::{Consumer, HandlerError, handler_fn};
//! use pgq_core::{ConsumerName, QueueName};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = pgq_core::sqlx::PgPool::connect("postgres://localhost/app").await?;
//! let consumer = Consumer::builder(pool, QueueName::new("orders")?, ConsumerName::new("billing")?)
//!     .event_types(["order.created"])      // typed filter, bound as a parameter
//!     .max_retries(5)                       // then it is a dead letter (pgq_rs.dead_letter)
//!     .build()?;
//!
//! let shutdown = CancellationToken::new();
//! let handler = handler_fn(|ev| async move {
//!     println!("{} {:?}", ev.ev_id, ev.ev_data);
//!     Ok::<_, HandlerError>(())
//! });
//! consumer.run(handler, shutdown.clone()).await?;   // until shutdown.cancel()
//! # Ok(()) }
//! ```
//!
//! ## Layers
//! - [`Consumer::next_batch`] gives a [`Batch`]: read its events ([`Batch::next_event`],
//!   [`Batch::next_chunk`], [`Batch::events`]), [`retry`](Batch::retry) some, then
//!   [`finish`](Batch::finish) it. A batch not read to the end is not finished by accident.
//! - [`Consumer::run`] (a per-event [`Handler`]) and [`Consumer::run_batches`] (a
//!   [`BatchHandler`]) are the run loop on top of it.
//! - Everything is generic over a [`BatchSource`]; [`Subscription`] is the plain pgq consumer,
//!   [`CoopMember`] a member of a cooperative group ([`CoopConsumer`]).
//!
//! ## Cooperative consumers
//! Several processes can share one consumer's position and split its batches: each is a
//! [`CoopConsumer`] (group name + member name, built with [`CoopConsumer::coop_builder`]) with
//! everything a [`Consumer`] has, plus a heartbeat while it handles a batch, the takeover of
//! crashed members' batches after a [`dead_interval`](ConsumerBuilder::dead_interval), and
//! leaving the group on a clean shutdown. See [`CoopMember`] and the `coop_workers` example.
//!
//! ## Delivery
//! [`Delivery::AtLeastOnce`] (default) finishes a batch after the handler has seen all of it;
//! [`Delivery::ExactlyOnce`] hands the handler the batch's transaction
//! ([`EventContext::transaction`]), so its writes, the retries, the dead letters and
//! `finish_batch` commit atomically.
//!
//! ## Roles
//! Consuming needs `pgq_reader`. A dead-letter queue needs `pgq_writer` to insert into, and
//! `pgq_admin` if the run loop is to create it. Retries go through `pgq_rs.event_retry_many`
//! (granted to `pgq_reader` by our migrations), which reads the batch once for all its retried
//! events, where pgq's `event_retry` would read it once per event.
//!
//! ## Connections
//! The run loop uses one pooled connection for batches. With wakeups on, the tick listener opens
//! a connection of its own (with the pool's options, outside the pool); a cooperative member's
//! heartbeat does too, the first time it holds a batch. Every wait for the database is bounded
//! by [`database_timeout`](ConsumerBuilder::database_timeout), so a half-open connection (the
//! network dropped without a FIN) is dropped rather than waited on; for server-side keepalives
//! on the pool's sessions, call [`pgq_core::configure_session`] in the pool's `after_connect`.
//! Dropping the future of [`Consumer::run`] instead of cancelling its token stops the listener
//! and the heartbeat (their sessions end) and returns the loop's connection to the pool.
//!
//! ## Observability
//! Each batch runs in a `pgq_batch` tracing span (queue, consumer, batch id, ticks). Metrics go
//! through the [`metrics`](https://docs.rs/metrics) facade; their names are in [`mod@metrics`].

#![forbid(unsafe_code)]

mod batch;
mod config;
mod coop;
mod dead_letter;
mod deadline;
mod error;
mod handler;
mod heartbeat;
pub mod metrics;
mod row_hint;
mod run;
mod source;
mod wakeup;

use std::sync::Arc;

use pgq_core::sqlx::{PgConnection, PgPool};
use pgq_core::{BatchId, ConsumerName, QueueName};

pub use batch::{Batch, BatchSummary};
pub use config::{
    Backoff, ConsumerBuilder, DeadLetter, DeadLetterFn, Delivery, ReadAhead, Registration,
    RetryPolicy, Shutdown,
};
use config::{Config, DeadLetterTarget};
pub use coop::{CoopConsumer, CoopMember};
pub use dead_letter::{DeadLetterEvent, DeadLetterMeta};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use handler::{
    BatchHandler, EventContext, ExactlyOnceHandler, FailureAction, Handler, HandlerError,
    HandlerFn, handler_fn,
};
pub use source::{BatchSource, Subscription};

pub use pgq_core;
pub use tokio_util::sync::CancellationToken;

pub(crate) struct Inner<S> {
    pool: PgPool,
    source: S,
    config: Config,
    /// Events read or handled so far: the heartbeat's measure of progress.
    progress: std::sync::atomic::AtomicU64,
}

impl<S> Inner<S> {
    /// Count `n` events read or handled (see [`ConsumerBuilder::stall_heartbeats`]).
    pub(crate) fn progressed(&self, n: u64) {
        self.progress
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Events read or handled so far.
    pub(crate) fn progress(&self) -> u64 {
        self.progress.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A consumer: one consumer identity on one queue, with its configuration. Cheap to clone.
pub struct Consumer<S: BatchSource = Subscription> {
    inner: Arc<Inner<S>>,
}

impl<S: BatchSource> Clone for Consumer<S> {
    fn clone(&self) -> Self {
        Consumer {
            inner: self.inner.clone(),
        }
    }
}

impl<S: BatchSource> std::fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", self.queue())
            .field("consumer", self.name())
            .finish_non_exhaustive()
    }
}

impl Consumer<Subscription> {
    /// Start building a consumer named `consumer` on `queue`, using connections of `pool`.
    pub fn builder(pool: PgPool, queue: QueueName, consumer: ConsumerName) -> ConsumerBuilder {
        ConsumerBuilder::new(pool, queue, consumer)
    }
}

impl<S: BatchSource> Consumer<S> {
    /// Register the consumer if it is not registered yet, where the builder's
    /// [`Registration`] says; returns `true` when it registered now. The run loop calls this.
    ///
    /// Needs `pgq_reader`.
    pub async fn register(&self) -> Result<bool> {
        let registration = &self.inner.config.registration;
        let newly = self
            .inner
            .source
            .register(&self.inner.pool, registration)
            .await?;
        if newly {
            tracing::info!(queue = %self.queue(), consumer = %self.name(), ?registration, "consumer registered");
        }
        Ok(newly)
    }

    /// Unregister the consumer: its position, open batch and retry events are dropped. A
    /// cooperative member leaves its group instead: its open batch goes back to the group and
    /// the group keeps its position.
    ///
    /// Needs `pgq_reader`.
    pub async fn unregister(&self) -> Result<()> {
        self.inner.source.unregister(&self.inner.pool).await
    }

    /// The queue.
    pub fn queue(&self) -> &QueueName {
        self.inner.source.queue()
    }

    /// The consumer name.
    pub fn name(&self) -> &ConsumerName {
        self.inner.source.consumer()
    }

    /// The pool the consumer uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The batch source.
    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// The next batch, opened on `conn` in a transaction of its own (a savepoint if `conn` is
    /// already in a transaction), or `None` when there is no new batch yet. Until it is finished,
    /// the same batch comes again.
    ///
    /// Needs `pgq_reader`.
    pub async fn next_batch<'c>(&self, conn: &'c mut PgConnection) -> Result<Option<Batch<'c, S>>> {
        let tuning = self.inner.config.tuning;
        let Some(info) = self.inner.source.next_batch(&mut *conn, tuning).await? else {
            return Ok(None);
        };
        Ok(Some(Batch::open(conn, info, self.inner.clone()).await?))
    }

    /// Open a batch by id, e.g. one whose id was kept across a restart. A batch held by another
    /// consumer is refused with [`Error::ForeignBatch`]; one held by nobody is `BatchNotFound`.
    ///
    /// Needs `pgq_reader`.
    pub async fn open_batch<'c>(
        &self,
        conn: &'c mut PgConnection,
        batch: BatchId,
    ) -> Result<Batch<'c, S>> {
        self.inner.source.check_owner(&mut *conn, batch).await?;
        let info = pgq_core::batch_info(&mut *conn, batch).await?;
        Batch::open(conn, info, self.inner.clone()).await
    }

    /// Check the dead-letter destination before the run loop starts: a dead-letter queue
    /// ([`DeadLetter::Queue`]) must exist and have a consumer registered, since pgq truncates
    /// the events of a queue nobody reads when it rotates its tables. Nothing to check for the
    /// dead-letter table, a callback or discard.
    pub async fn check_dead_letter_destination(&self) -> Result<()> {
        let DeadLetterTarget::Queue(dlq) = &self.inner.config.dead_letter else {
            return Ok(());
        };
        let pool = &self.inner.pool;
        if !pgq_core::queue_exists(pool, dlq).await? {
            return Err(Error::Config(format!(
                "the dead-letter queue {dlq} does not exist: create it and register a consumer \
                 on it (`pgq queue create {dlq}` and `pgq consumer register {dlq} NAME`), or use \
                 the durable dead-letter table (DeadLetter::Table, the default)"
            )));
        }
        if pgq_core::get_consumer_info_queue(pool, dlq)
            .await?
            .is_empty()
        {
            return Err(Error::Config(format!(
                "the dead-letter queue {dlq} has no consumer registered: pgq truncates the \
                 events of a queue nobody reads when it rotates, so its dead letters would be \
                 lost; register one (`pgq consumer register {dlq} NAME`), or use the durable \
                 dead-letter table (DeadLetter::Table, the default)"
            )));
        }
        Ok(())
    }

    async fn prepare(&self) -> Result<()> {
        self.register().await?;
        self.check_dead_letter_destination().await?;
        if self.inner.config.wakeups && !pgq_core::tick_trigger_installed(&self.inner.pool).await? {
            tracing::warn!(
                "the pgq.tick wakeup trigger is not installed (run pgq_core::install): consumers \
                 wake only by polling every {:?}",
                self.inner.config.poll_interval
            );
        }
        Ok(())
    }
}
