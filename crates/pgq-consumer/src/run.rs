//! The run loop: wait for batches, hand their events to a handler, retry or dead-letter failures,
//! finish; recover from database errors with capped backoff; stop cleanly on shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use pgq_core::sqlx::pool::PoolConnection;
use pgq_core::sqlx::{PgConnection, Postgres};
use pgq_core::{BatchInfo, Event};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Consumer;
use crate::batch::{Batch, Failures, batch_metrics, batch_span};
use crate::config::{Delivery, ReadAhead, Shutdown};
use crate::deadline::{Deadline, Timed, TimedBatch};
use crate::error::{Error, Result};
use crate::handler::{
    BatchHandler, EventContext, ExactlyOnceHandler, Handler, HandlerError, InTransaction,
};
use crate::heartbeat::Heartbeat;
use crate::source::BatchSource;
use crate::wakeup::{Wake, Wakeups, sleep_or_cancel};

/// How a batch ended.
enum Processed {
    Finished,
    /// Rolled back because of shutdown; it will be delivered again.
    Abandoned,
}

/// What one round of the loop did.
enum Round {
    Batch,
    Idle,
    Stopped,
}

/// Processes one batch; the per-event and per-batch handler forms are two drivers.
trait Driver<S: BatchSource>: Send + Sync {
    fn process(
        &self,
        consumer: &Consumer<S>,
        conn: &mut PgConnection,
        info: BatchInfo,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Processed>> + Send;
}

struct EventDriver<H>(H);
struct BatchDriver<H>(H);

fn abandon_now<S: BatchSource>(consumer: &Consumer<S>, shutdown: &CancellationToken) -> bool {
    consumer.inner.config.shutdown == Shutdown::Abandon && shutdown.is_cancelled()
}

impl<S: BatchSource, H: Handler> Driver<S> for EventDriver<H> {
    async fn process(
        &self,
        consumer: &Consumer<S>,
        conn: &mut PgConnection,
        info: BatchInfo,
        shutdown: &CancellationToken,
    ) -> Result<Processed> {
        if consumer.inner.config.delivery == Delivery::ExactlyOnce {
            return self.process_chunks(consumer, conn, info, shutdown).await;
        }
        match stream_events(&self.0, consumer, &mut *conn, &info, shutdown).await? {
            Some(processed) => Ok(processed),
            // A part read ahead of the open batch: stop reading ahead; the open batch comes
            // again, whole (events handled since its start come again).
            None if consumer.inner.source.ahead_range(&info).is_some() => {
                consumer.inner.source.read_ahead(ReadAhead::Off);
                consumer
                    .inner
                    .source
                    .read_ahead(consumer.inner.config.read_ahead);
                Ok(Processed::Finished)
            }
            // Too many dead letters to hold until the batch's end, or statement_timeout: read
            // it in chunks instead, from the start (events handled so far come again).
            None => self.process_chunks(consumer, conn, info, shutdown).await,
        }
    }
}

impl<H: Handler> EventDriver<H> {
    /// The batch through its cursor, chunk by chunk in the batch's transaction; exactly-once
    /// runs each chunk in a savepoint.
    async fn process_chunks<S: BatchSource>(
        &self,
        consumer: &Consumer<S>,
        conn: &mut PgConnection,
        info: BatchInfo,
        shutdown: &CancellationToken,
    ) -> Result<Processed> {
        let mut batch = Batch::open(conn, info.clone(), consumer.inner.clone()).await?;
        let span = batch.span().clone();
        let exactly_once = consumer.inner.config.delivery == Delivery::ExactlyOnce;
        async move {
            loop {
                let chunk = batch.next_chunk().await?;
                if chunk.is_empty() {
                    break;
                }
                let failed = if exactly_once {
                    handle_chunk_in_tx(&self.0, consumer, &mut batch, &info, &chunk, shutdown)
                        .await?
                } else {
                    handle_chunk(&self.0, consumer, &info, &chunk, shutdown).await
                };
                let Some(failed) = failed else {
                    batch.abandon().await?;
                    return Ok(Processed::Abandoned);
                };
                for (i, err) in &failed {
                    batch.fail_event(&chunk[*i], err).await?;
                }
            }
            batch.finish().await?;
            Ok(Processed::Finished)
        }
        .instrument(span)
        .await
    }
}

/// At-least-once: the batch's events streamed to the handler by one statement (the server keeps
/// sending rows while the handler runs; memory stays flat), then the retries, the dead letters
/// and `finish_batch` in one transaction. `None` when the batch is better read in chunks: more
/// events are due for the dead-letter queue than `fetch_size` (they are held until the end), or
/// the statement hit `statement_timeout` (a slow handler keeps it open). Nothing was written
/// to the database then (a dead-letter callback may have been called: at-least-once), and the
/// rest of the stream is drained before the connection's next statement.
async fn stream_events<S: BatchSource, H: Handler>(
    handler: &H,
    consumer: &Consumer<S>,
    conn: &mut PgConnection,
    info: &BatchInfo,
    shutdown: &CancellationToken,
) -> Result<Option<Processed>> {
    use futures_util::TryStreamExt;
    let inner = &consumer.inner;
    let span = batch_span(info, inner);
    let metrics = batch_metrics(info, inner);
    let started = Instant::now();
    async {
        let mut failures = Failures::default();
        let mut read = 0u64;
        {
            let mut events = match inner.source.ahead_range(info) {
                Some((from, to)) => {
                    pgq_core::stream_events_beyond(&mut *conn, info.batch_id, from, to).await?
                }
                None => {
                    pgq_core::stream_batch_events(&mut *conn, info.batch_id, &inner.config.filter)
                        .await?
                }
            };
            loop {
                let event = match events.try_next().await {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e)
                        if e.sqlstate().as_deref() == Some(pgq_core::sqlstate::QUERY_CANCELED) =>
                    {
                        tracing::warn!(
                            events_read = read,
                            "the batch's statement hit statement_timeout: reading the batch \
                             again in chunks"
                        );
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                };
                if abandon_now(consumer, shutdown) {
                    // Nothing was written: the batch comes again.
                    return Ok(Some(Processed::Abandoned));
                }
                read += 1;
                metrics.events.increment(1);
                let mut ctx = EventContext {
                    conn: None,
                    batch: info,
                };
                let handled = handler.handle(&event, &mut ctx).await;
                inner.progressed(1);
                if let Err(e) = handled {
                    failures.push(inner, event, &e).await?;
                    if failures.dead_letters() > inner.config.fetch_size as usize {
                        tracing::warn!(
                            events_read = read,
                            "more events for the dead-letter queue than fetch_size: reading the \
                             batch again in chunks"
                        );
                        return Ok(None);
                    }
                }
            }
        }
        let mut batch = Batch::open_read(
            conn,
            info.clone(),
            inner.clone(),
            (span.clone(), metrics, started),
            read,
        )
        .await?;
        batch.apply_failures(failures).await?;
        batch.finish().await?;
        Ok(Some(Processed::Finished))
    }
    .instrument(span.clone())
    .await
}

/// At-least-once: call the handler for each event; returns the failures (`None`: abandon).
async fn handle_chunk<S: BatchSource, H: Handler>(
    handler: &H,
    consumer: &Consumer<S>,
    info: &BatchInfo,
    chunk: &[Event],
    shutdown: &CancellationToken,
) -> Option<Vec<(usize, HandlerError)>> {
    let mut failed = Vec::new();
    for (i, ev) in chunk.iter().enumerate() {
        if abandon_now(consumer, shutdown) {
            return None;
        }
        let mut ctx = EventContext {
            conn: None,
            batch: info,
        };
        let handled = handler.handle(ev, &mut ctx).await;
        consumer.inner.progressed(1);
        if let Err(e) = handled {
            failed.push((i, e));
        }
    }
    Some(failed)
}

/// Exactly-once: the chunk runs in a savepoint of the batch's transaction; when an event fails,
/// the savepoint is rolled back and the chunk replayed without it, so a failed handler leaves no
/// writes behind. Returns the failures (`None`: abandon).
async fn handle_chunk_in_tx<S: BatchSource, H: Handler>(
    handler: &H,
    consumer: &Consumer<S>,
    batch: &mut Batch<'_, S>,
    info: &BatchInfo,
    chunk: &[Event],
    shutdown: &CancellationToken,
) -> Result<Option<Vec<(usize, HandlerError)>>> {
    use pgq_core::sqlx::Connection;
    let mut failed: Vec<(usize, HandlerError)> = Vec::new();
    'attempt: loop {
        let mut sp = batch.conn().begin().await?;
        for (i, ev) in chunk.iter().enumerate() {
            if failed.iter().any(|(j, _)| *j == i) {
                continue;
            }
            if abandon_now(consumer, shutdown) {
                return Ok(None);
            }
            let mut ctx = EventContext {
                conn: Some(&mut *sp),
                batch: info,
            };
            let handled = handler.handle(ev, &mut ctx).await;
            consumer.inner.progressed(1);
            if let Err(e) = handled {
                sp.rollback().await?;
                failed.push((i, e));
                continue 'attempt;
            }
        }
        sp.commit().await?;
        return Ok(Some(failed));
    }
}

impl<S: BatchSource, H: BatchHandler<S>> Driver<S> for BatchDriver<H> {
    async fn process(
        &self,
        consumer: &Consumer<S>,
        conn: &mut PgConnection,
        info: BatchInfo,
        shutdown: &CancellationToken,
    ) -> Result<Processed> {
        let mut batch = Batch::open(&mut *conn, info.clone(), consumer.inner.clone()).await?;
        if abandon_now(consumer, shutdown) {
            batch.abandon().await?;
            return Ok(Processed::Abandoned);
        }
        let span = batch.span().clone();
        let outcome = self
            .0
            .handle_batch(&mut batch)
            .instrument(span.clone())
            .await;
        let err = match outcome {
            Ok(()) if batch.can_finish() => {
                batch.finish().await?;
                return Ok(Processed::Finished);
            }
            Ok(()) => HandlerError::new(Error::NotFullyRead {
                batch: batch.id(),
                read: batch.events_read(),
            }),
            Err(e) => e,
        };
        span.in_scope(|| tracing::warn!(error = %err, "batch handler failed; retrying its events"));
        batch.abandon().await?;
        // Retry (or dead-letter) every event of the batch, then finish it.
        let mut batch = Batch::open(conn, info, consumer.inner.clone()).await?;
        async move {
            loop {
                let chunk = batch.next_chunk().await?;
                if chunk.is_empty() {
                    break;
                }
                for ev in &chunk {
                    batch.fail_event(ev, &err).await?;
                }
            }
            batch.finish().await?;
            Ok(Processed::Finished)
        }
        .instrument(span)
        .await
    }
}

impl<S: BatchSource> Consumer<S> {
    /// Run the consumer with a per-event handler until `shutdown` is cancelled.
    ///
    /// - Registers the consumer if needed (see [`crate::Registration`]) and creates the
    ///   dead-letter queue if configured.
    /// - Waits for batches: woken within milliseconds by tick notifications, polling every
    ///   `poll_interval` as the fallback.
    /// - A failed event is retried with backoff through pgq's retry queue; after `max_retries` it
    ///   goes to the dead-letter destination.
    /// - Database errors (lost connection, server restart) are logged and retried with capped
    ///   exponential backoff on a fresh connection; the batch in progress is rolled back and comes
    ///   again. Errors that waiting cannot fix (queue or consumer missing, permission denied,
    ///   configuration) end the loop with `Err`.
    /// - On shutdown, the batch in progress is finished (or, with [`Shutdown::Abandon`], rolled
    ///   back for redelivery) and the loop returns `Ok(())`. A batch is never half-finished.
    /// - A cooperative member ([`crate::CoopConsumer`]) also touches its membership while it
    ///   holds a batch (a heartbeat on a connection of its own), and leaves its group on
    ///   shutdown (a batch it still holds goes back to the group).
    ///
    /// Every wait for the database is bounded by the builder's
    /// [`database_timeout`](crate::ConsumerBuilder::database_timeout) (the handler's own time
    /// does not count): a half-open connection is dropped after that long and the loop carries
    /// on with a fresh one. Dropping this future instead of cancelling `shutdown` rolls the
    /// batch in progress back (it comes again) and stops the tick listener and the heartbeat:
    /// their connections are closed, the loop's own goes back to the pool.
    pub async fn run<H: Handler>(&self, handler: H, shutdown: CancellationToken) -> Result<()> {
        let deadline = Deadline::new(self.inner.config.database_timeout);
        let handler = Timed {
            handler,
            deadline: deadline.clone(),
        };
        // At least once, every event of a batch: the source may read ahead of an open batch
        // while writing its row is dear (a held xmin horizon), for as long as this loop runs.
        let cfg = &self.inner.config;
        let _ahead = AheadGuard::allow(
            &self.inner.source,
            if cfg.delivery == Delivery::AtLeastOnce && cfg.filter.is_empty() {
                cfg.read_ahead
            } else {
                ReadAhead::Off
            },
        );
        self.run_loop(&EventDriver(handler), &deadline, &shutdown)
            .await
    }

    /// [`Consumer::run`] with an [`ExactlyOnceHandler`], which gets the batch's transaction
    /// directly. The consumer must be built with [`Delivery::ExactlyOnce`]; otherwise this
    /// returns [`Error::Config`] before touching the database.
    pub async fn run_exactly_once<H: ExactlyOnceHandler>(
        &self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if self.inner.config.delivery != Delivery::ExactlyOnce {
            return Err(Error::Config(
                "run_exactly_once needs a consumer built with \
                 .delivery(Delivery::ExactlyOnce): its handler writes in the batch's transaction"
                    .into(),
            ));
        }
        self.run(InTransaction(handler), shutdown).await
    }

    /// Run the consumer with a per-batch handler until `shutdown` is cancelled; see
    /// [`Consumer::run`] and [`BatchHandler`].
    pub async fn run_batches<H: BatchHandler<S>>(
        &self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let deadline = Deadline::new(self.inner.config.database_timeout);
        let handler = TimedBatch {
            handler,
            deadline: deadline.clone(),
        };
        self.run_loop(&BatchDriver(handler), &deadline, &shutdown)
            .await
    }

    async fn run_loop<D: Driver<S>>(
        &self,
        driver: &D,
        deadline: &Deadline,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        self.run_rounds(driver, deadline, shutdown).await?;
        // A clean stop: let the source release what it holds (a cooperative member leaves).
        deadline
            .guard("leaving", self.inner.source.leave(&self.inner.pool))
            .await
    }

    async fn run_rounds<D: Driver<S>>(
        &self,
        driver: &D,
        deadline: &Deadline,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let cfg = &self.inner.config;
        let queue = self.inner.source.queue();
        let consumer = self.inner.source.consumer().as_str();
        let mut failures = 0u32;
        loop {
            match deadline.guard("consumer setup", self.prepare()).await {
                Ok(()) => break,
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    tracing::warn!(queue = %queue, consumer, error = %e, "consumer setup failed; retrying");
                    crate::metrics::error(queue.as_str(), consumer);
                    if sleep_or_cancel(cfg.reconnect.delay(failures), shutdown).await {
                        return Ok(());
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        let wakeups = Wakeups::start(
            &self.inner.pool,
            queue,
            consumer,
            cfg.wakeups,
            cfg.reconnect,
            cfg.database_timeout,
            shutdown,
        );
        let heartbeat = Heartbeat::start(&self.inner);
        failures = 0;
        // The loop keeps its connection between rounds: taking one from the pool again would
        // cost a round trip (the pool's liveness check) on every wakeup while events flow.
        let mut conn = KeptConnection::new(cfg.database_timeout);
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            match self
                .round(&mut conn, driver, heartbeat.as_ref(), deadline, shutdown)
                .await
            {
                Ok(Round::Batch) => failures = 0,
                Ok(Round::Idle) => {
                    failures = 0;
                    if conn.idle_wait(&wakeups, cfg.poll_interval, shutdown).await == Wake::Shutdown
                    {
                        break Ok(());
                    }
                }
                Ok(Round::Stopped) => break Ok(()),
                Err(e) if e.is_fatal() => break Err(e),
                Err(e) if is_lost_batch(&e) => {
                    // Not this consumer's any more: nothing to wait for, but nothing it did
                    // in the batch's transaction was kept.
                    tracing::warn!(
                        queue = %queue,
                        consumer,
                        error = %e,
                        "the batch was taken from this consumer (a cooperative member silent for \
                         longer than the group's dead interval is taken over); its work was \
                         rolled back and the batch is handled by its new owner"
                    );
                    crate::metrics::error(queue.as_str(), consumer);
                }
                Err(e) => {
                    let delay = cfg.reconnect.delay(failures);
                    tracing::warn!(
                        queue = %queue,
                        consumer,
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "consumer error; backing off"
                    );
                    crate::metrics::error(queue.as_str(), consumer);
                    if sleep_or_cancel(delay, shutdown).await {
                        break Ok(());
                    }
                    failures = failures.saturating_add(1);
                }
            }
        };
        wakeups.stop().await;
        if let Some(heartbeat) = heartbeat {
            heartbeat.stop().await;
        }
        result
    }

    async fn round<D: Driver<S>>(
        &self,
        slot: &mut KeptConnection,
        driver: &D,
        heartbeat: Option<&Heartbeat>,
        deadline: &Deadline,
        shutdown: &CancellationToken,
    ) -> Result<Round> {
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => {
                deadline
                    .guard("taking a connection", async {
                        Ok(self.inner.pool.acquire().await?)
                    })
                    .await?
            }
        };
        deadline.restart();
        let work = async {
            let tuning = self.inner.config.tuning;
            let Some(info) = self.inner.source.next_batch(&mut conn, tuning).await? else {
                return Ok(Round::Idle);
            };
            let _in_flight = heartbeat.map(Heartbeat::hold);
            match driver.process(self, &mut conn, info, shutdown).await? {
                Processed::Finished => Ok(Round::Batch),
                Processed::Abandoned => Ok(Round::Stopped),
            }
        };
        // Everything but the handler's time is bounded (see `Deadline`).
        let result = tokio::select! {
            r = work => r,
            () = deadline.expired() => Err(deadline.error("waiting for the database")),
        };
        match result {
            // Half-open, or stuck: close the socket now, without a goodbye that could wait
            // too (and without the pool's liveness check on return, which has no timeout).
            Err(Error::Unresponsive { .. }) => drop(conn.detach()),
            // After an error its state is unknown (broken, or mid-transaction); a batch
            // abandoned on shutdown may have left a result half read. Do not reuse it.
            Err(_) | Ok(Round::Stopped) => conn.close_on_drop(),
            Ok(_) => slot.keep(conn),
        }
        result
    }
}

/// Reading ahead allowed on a source while the run loop runs (off again when it ends, however).
struct AheadGuard<'a, S: BatchSource>(&'a S);

impl<'a, S: BatchSource> AheadGuard<'a, S> {
    fn allow(source: &'a S, mode: ReadAhead) -> AheadGuard<'a, S> {
        source.read_ahead(mode);
        AheadGuard(source)
    }
}

impl<S: BatchSource> Drop for AheadGuard<'_, S> {
    fn drop(&mut self) {
        self.0.read_ahead(ReadAhead::Off);
    }
}

/// The run loop's connection between rounds, kept while it is in steady use. One unused for
/// [`KeptConnection::FRESH`] goes back to the pool (also while the loop waits for a wakeup), so a
/// connection broken during a quiet spell is noticed by the pool's liveness check rather than by
/// a failed round. With a `poll_interval` shorter than that, every poll uses it and it is kept.
///
/// A connection goes back to the pool only after it answered a ping within `database_timeout`
/// (in the background): sqlx's own check on return has no timeout, and would hold a pool slot
/// forever on a connection that went half-open during the quiet spell. One that does not answer
/// is closed.
struct KeptConnection(Option<(PoolConnection<Postgres>, Instant)>, Duration);

impl KeptConnection {
    const FRESH: Duration = Duration::from_secs(1);

    fn new(timeout: Duration) -> KeptConnection {
        KeptConnection(None, timeout)
    }

    fn take(&mut self) -> Option<PoolConnection<Postgres>> {
        let (conn, used) = self.0.take()?;
        if used.elapsed() < Self::FRESH {
            return Some(conn);
        }
        self.release(conn);
        None
    }

    /// Give `conn` back to the pool if it answers a ping in time; else close it.
    fn release(&self, mut conn: PoolConnection<Postgres>) {
        use pgq_core::sqlx::Connection;
        let timeout = self.1;
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, conn.ping()).await {
                Ok(Ok(())) => drop(conn),
                _ => drop(conn.detach()),
            }
        });
    }

    fn keep(&mut self, conn: PoolConnection<Postgres>) {
        self.0 = Some((conn, Instant::now()));
    }

    /// Wait for a wakeup (at most `poll`), keeping the connection for at most
    /// [`KeptConnection::FRESH`] of it.
    async fn idle_wait(
        &mut self,
        wakeups: &Wakeups,
        poll: Duration,
        shutdown: &CancellationToken,
    ) -> Wake {
        if self.0.is_none() || poll <= Self::FRESH {
            return wakeups.wait(poll, shutdown).await;
        }
        match wakeups.wait(Self::FRESH, shutdown).await {
            Wake::Poll => {
                if let Some((conn, _)) = self.0.take() {
                    self.release(conn);
                }
                wakeups.wait(poll - Self::FRESH, shutdown).await
            }
            wake => wake,
        }
    }
}

/// The batch being finished is no longer held by this consumer (taken over, or finished by
/// someone else).
fn is_lost_batch(e: &Error) -> bool {
    matches!(
        e.kind(),
        crate::ErrorKind::Core(pgq_core::ErrorKind::BatchNotFound) | crate::ErrorKind::ForeignBatch
    )
}
