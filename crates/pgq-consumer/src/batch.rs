//! One batch being consumed: its events in bounded-memory chunks, per-event retries, dead
//! letters, and a guarded finish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures_core::Stream;
use pgq_core::sqlx::{Connection, PgConnection, Postgres, Transaction};
use pgq_core::{BatchId, BatchInfo, Event, EventId};

use crate::Inner;
use crate::config::{DeadLetterTarget, RetryPolicy};
use crate::dead_letter::DeadLetterEvent;
use crate::error::{Error, Result};
use crate::handler::{FailureAction, HandlerError};
use crate::metrics::BatchMetrics;
use crate::source::{BatchSource, Subscription};

/// What finishing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSummary {
    /// The batch.
    pub batch_id: BatchId,
    /// Events read from it.
    pub events: u64,
    /// Events put into the retry queue.
    pub retried: u64,
    /// Events sent to the dead-letter destination.
    pub dead_lettered: u64,
    /// The rest of the batch was skipped on purpose ([`Batch::skip_rest`]).
    pub skipped_rest: bool,
}

/// An open batch, read in its own transaction on the connection it was opened on.
///
/// Events come through a cursor in chunks of the consumer's fetch size, so memory stays bounded
/// whatever the batch size; between chunks the connection is free for the batch's transaction
/// ([`Batch::conn`]), which is how exactly-once consumers write. Retries ([`Batch::retry`]) are
/// collected (16 bytes per event) and applied in one statement when the batch is finished, in the
/// same transaction as `finish_batch`.
///
/// [`Batch::finish`] refuses a batch that was not read to the end unless the caller said what
/// happens to the rest ([`Batch::skip_rest`], [`Batch::retry_rest`]). Dropping or
/// [abandoning](Batch::abandon) a batch rolls its transaction back: it is delivered again.
///
/// If the connection was already inside a transaction, the batch runs in a savepoint of it and
/// finishing releases the savepoint: the caller's commit then commits the batch.
#[must_use = "a batch must be finished (or abandoned for redelivery)"]
pub struct Batch<'c, S: BatchSource = Subscription> {
    tx: Transaction<'c, Postgres>,
    info: BatchInfo,
    inner: Arc<Inner<S>>,
    cursor_open: bool,
    exhausted: bool,
    skipped_rest: bool,
    buf: VecDeque<Event>,
    read: u64,
    retries: Vec<(EventId, DateTime<Utc>)>,
    dead_lettered: u64,
    started: Instant,
    metrics: BatchMetrics,
    span: tracing::Span,
}

impl<S: BatchSource> std::fmt::Debug for Batch<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("info", &self.info)
            .field("read", &self.read)
            .field("exhausted", &self.exhausted)
            .field("retries", &self.retries.len())
            .finish_non_exhaustive()
    }
}

/// What the retry policy does with an event whose handler failed: `Some(delay)` to retry it
/// (logged here), `None` to dead-letter it (it was retried `max_retries` times, or the error asks
/// for it).
fn retry_delay(policy: &RetryPolicy, event: &Event, error: &HandlerError) -> Option<Duration> {
    let retries = u32::try_from(event.retry_count()).unwrap_or(0);
    if error.action() == FailureAction::DeadLetter || retries >= policy.max_retries {
        return None;
    }
    let delay = match error.action() {
        FailureAction::RetryAfter(d) => d,
        _ => policy.backoff.delay(retries),
    };
    tracing::warn!(
        ev_id = event.ev_id,
        retries,
        delay_ms = delay.as_millis() as u64,
        error = %error,
        "handler failed; event will be retried"
    );
    Some(delay)
}

fn retry_at(after: Duration) -> DateTime<Utc> {
    Utc::now() + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX)
}

/// The dead letter of `event` from this consumer.
fn dead_letter_event<S: BatchSource>(
    inner: &Inner<S>,
    event: &Event,
    reason: String,
) -> DeadLetterEvent {
    DeadLetterEvent {
        event: event.clone(),
        reason,
        retries: event.retry_count(),
        queue: inner.source.queue().to_string(),
        consumer: inner.source.consumer().to_string(),
    }
}

/// Hand `dl` to a dead-letter target that needs no transaction: a callback (awaited now) or
/// nowhere (discard), and log it. `false` for the dead-letter table or a queue: the caller
/// inserts it in the batch's transaction.
async fn dead_letter_now(target: &DeadLetterTarget, dl: &DeadLetterEvent) -> Result<bool> {
    match target {
        DeadLetterTarget::Table | DeadLetterTarget::Queue(_) => return Ok(false),
        DeadLetterTarget::Callback(f) => {
            f(dl.clone()).await.map_err(|source| Error::DeadLetter {
                ev_id: dl.event.ev_id,
                source,
            })?;
        }
        DeadLetterTarget::Discard => {}
    }
    log_dead_letter(dl);
    Ok(true)
}

fn log_dead_letter(dl: &DeadLetterEvent) {
    tracing::warn!(
        ev_id = dl.event.ev_id,
        retries = dl.retries,
        reason = %dl.reason,
        "event dead-lettered"
    );
}

/// Handler failures of a batch the run loop streams, decided as they happen: a retry is kept as
/// its event id and time (16 bytes); a dead letter for a callback (or discarded) is handled at
/// once, one for the dead-letter table or queue kept whole until the batch's transaction is open
/// ([`Batch::apply_failures`]).
#[derive(Default)]
pub(crate) struct Failures {
    retries: Vec<(EventId, DateTime<Utc>)>,
    dead: Vec<DeadLetterEvent>,
    delivered: u64,
}

impl Failures {
    /// Record a failed event of this consumer's batch.
    pub(crate) async fn push<S: BatchSource>(
        &mut self,
        inner: &Inner<S>,
        event: Event,
        error: &HandlerError,
    ) -> Result<()> {
        match retry_delay(&inner.config.retry, &event, error) {
            Some(delay) => self.retries.push((event.id(), retry_at(delay))),
            None => {
                let dl = dead_letter_event(inner, &event, error.reason());
                if dead_letter_now(&inner.config.dead_letter, &dl).await? {
                    self.delivered += 1;
                } else {
                    self.dead.push(dl);
                }
            }
        }
        Ok(())
    }

    /// How many events wait for the dead-letter table or queue (kept whole in memory).
    pub(crate) fn dead_letters(&self) -> usize {
        self.dead.len()
    }
}

/// The metrics handles of a batch, its lag (the end tick's age) set now.
pub(crate) fn batch_metrics<S: BatchSource>(info: &BatchInfo, inner: &Inner<S>) -> BatchMetrics {
    let metrics = BatchMetrics::new(
        inner.source.queue().as_str(),
        inner.source.consumer().as_str(),
    );
    let lag = (Utc::now() - info.cur_tick_time)
        .to_std()
        .unwrap_or_default();
    metrics.lag.set(lag.as_secs_f64());
    metrics
}

/// The `pgq_batch` tracing span of a batch.
pub(crate) fn batch_span<S: BatchSource>(info: &BatchInfo, inner: &Inner<S>) -> tracing::Span {
    tracing::info_span!(
        "pgq_batch",
        queue = inner.source.queue().as_str(),
        consumer = inner.source.consumer().as_str(),
        batch_id = info.batch_id.get(),
        prev_tick = info.prev_tick_id.get(),
        cur_tick = info.cur_tick_id.get(),
    )
}

impl<'c, S: BatchSource> Batch<'c, S> {
    pub(crate) async fn open(
        conn: &'c mut PgConnection,
        info: BatchInfo,
        inner: Arc<Inner<S>>,
    ) -> Result<Self> {
        let span = batch_span(&info, &*inner);
        let metrics = batch_metrics(&info, &*inner);
        Self::begin(conn, info, inner, span, metrics, Instant::now()).await
    }

    /// The batch whose `read` events the run loop has already streamed to its handler (and
    /// counted in `metrics`), to the end: what is left is failed events and the finish, in the
    /// batch's transaction.
    pub(crate) async fn open_read(
        conn: &'c mut PgConnection,
        info: BatchInfo,
        inner: Arc<Inner<S>>,
        (span, metrics, started): (tracing::Span, BatchMetrics, Instant),
        read: u64,
    ) -> Result<Self> {
        let mut batch = Self::begin(conn, info, inner, span, metrics, started).await?;
        batch.exhausted = true;
        batch.read = read;
        Ok(batch)
    }

    async fn begin(
        conn: &'c mut PgConnection,
        info: BatchInfo,
        inner: Arc<Inner<S>>,
        span: tracing::Span,
        metrics: BatchMetrics,
        started: Instant,
    ) -> Result<Self> {
        let tx = conn.begin().await?;
        Ok(Batch {
            tx,
            info,
            inner,
            cursor_open: false,
            exhausted: false,
            skipped_rest: false,
            buf: VecDeque::new(),
            read: 0,
            retries: Vec::new(),
            dead_lettered: 0,
            started,
            metrics,
            span,
        })
    }

    /// The batch's ids, ticks and times.
    pub fn info(&self) -> &BatchInfo {
        &self.info
    }

    /// The batch id.
    pub fn id(&self) -> BatchId {
        self.info.batch_id
    }

    /// The tracing span of this batch (the run loop runs the handler inside it).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// How many events were read so far.
    pub fn events_read(&self) -> u64 {
        self.read
    }

    /// Whether every event was read.
    pub fn is_read_to_end(&self) -> bool {
        self.exhausted && self.buf.is_empty()
    }

    /// The batch's transaction, for writes that must commit together with the batch
    /// (exactly-once). Not usable while a stream from [`Batch::events`] is alive.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    async fn fetch(&mut self) -> Result<Vec<Event>> {
        let batch = self.info.batch_id;
        let fetch_size = self.inner.config.fetch_size;
        let open = self.cursor_open;
        let filter = &self.inner.config.filter;
        let conn = &mut *self.tx;
        if !open {
            pgq_core::declare_batch_cursor(&mut *conn, batch, filter).await?;
        }
        self.cursor_open = true;
        let rows = pgq_core::fetch_batch_cursor(conn, batch, fetch_size).await?;
        if rows.len() < fetch_size as usize {
            self.exhausted = true;
        }
        Ok(rows)
    }

    /// The next chunk of events (at most the fetch size); empty when the batch has been read to
    /// the end.
    pub async fn next_chunk(&mut self) -> Result<Vec<Event>> {
        let rows = if !self.buf.is_empty() {
            self.buf.drain(..).collect()
        } else if self.exhausted {
            Vec::new()
        } else {
            self.fetch().await?
        };
        self.read += rows.len() as u64;
        self.metrics.events.increment(rows.len() as u64);
        self.inner.progressed(rows.len() as u64);
        Ok(rows)
    }

    /// The next event, or `None` at the end of the batch.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        if self.buf.is_empty() && !self.exhausted {
            self.buf = self.fetch().await?.into();
        }
        let ev = self.buf.pop_front();
        if ev.is_some() {
            self.read += 1;
            self.metrics.events.increment(1);
            self.inner.progressed(1);
        }
        Ok(ev)
    }

    /// The rest of the batch as a stream. To retry events while reading, use
    /// [`Batch::next_event`] instead (the stream borrows the batch).
    pub fn events(&mut self) -> impl Stream<Item = Result<Event>> + Send + '_ {
        futures_util::stream::try_unfold(self, |batch| async move {
            Ok(batch.next_event().await?.map(|ev| (ev, batch)))
        })
    }

    /// Put `event` into the retry queue, to come back after `after` with `ev_retry + 1` (after
    /// the ticker's retry step and a later tick). Applied when the batch is finished.
    pub fn retry(&mut self, event: &Event, after: Duration) {
        self.retries.push((event.id(), retry_at(after)));
    }

    /// How many events are waiting to go into the retry queue.
    pub fn pending_retries(&self) -> usize {
        self.retries.len()
    }

    /// Read the rest of the batch and put every remaining event into the retry queue; the batch
    /// can then be finished. Returns how many events that was.
    pub async fn retry_rest(&mut self, after: Duration) -> Result<u64> {
        let mut n = 0u64;
        loop {
            let chunk = self.next_chunk().await?;
            if chunk.is_empty() {
                return Ok(n);
            }
            for ev in &chunk {
                self.retry(ev, after);
            }
            n += chunk.len() as u64;
        }
    }

    /// Allow finishing without reading the rest: the unread events are skipped for good.
    pub fn skip_rest(&mut self) {
        self.skipped_rest = true;
    }

    /// Send `event` to the consumer's dead-letter destination with `reason`. The dead-letter
    /// table (`pgq_reader`) or queue (`pgq_writer`) gets it inside the batch's transaction, so it
    /// commits with the batch's finish; a callback is awaited now.
    pub async fn dead_letter(&mut self, event: &Event, reason: impl Into<String>) -> Result<()> {
        let dl = dead_letter_event(&self.inner, event, reason.into());
        self.deliver_dead_letters(vec![dl]).await
    }

    /// Deliver dead letters: into the batch's transaction (table or queue, one statement for
    /// all), or to a callback one by one.
    async fn deliver_dead_letters(&mut self, dead: Vec<DeadLetterEvent>) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let n = dead.len() as u64;
        let inner = self.inner.clone();
        match &inner.config.dead_letter {
            DeadLetterTarget::Table => {
                let letters: Vec<_> = dead
                    .iter()
                    .map(|dl| pgq_core::NewDeadLetter {
                        event: &dl.event,
                        reason: &dl.reason,
                    })
                    .collect();
                pgq_core::insert_dead_letters(
                    self.conn(),
                    inner.source.queue(),
                    inner.source.consumer(),
                    &letters,
                )
                .await?;
                dead.iter().for_each(log_dead_letter);
            }
            DeadLetterTarget::Queue(q) => {
                let events: Vec<_> = dead.iter().map(DeadLetterEvent::to_new_event).collect();
                pgq_core::insert_events(self.conn(), q, &events).await?;
                dead.iter().for_each(log_dead_letter);
            }
            target => {
                for dl in &dead {
                    dead_letter_now(target, dl).await?;
                }
            }
        }
        self.dead_lettered += n;
        self.metrics.dead_letters.increment(n);
        Ok(())
    }

    /// Apply the retry policy to an event whose handler failed: retry it with backoff, or
    /// dead-letter it when it has been retried `max_retries` times (or the error asks for it).
    pub async fn fail_event(&mut self, event: &Event, error: &HandlerError) -> Result<()> {
        match retry_delay(&self.inner.config.retry, event, error) {
            Some(delay) => {
                self.retry(event, delay);
                Ok(())
            }
            None => self.dead_letter(event, error.reason()).await,
        }
    }

    /// Apply the failures collected while the batch was streamed: the retries, and the dead
    /// letters (in the batch's transaction).
    pub(crate) async fn apply_failures(&mut self, failures: Failures) -> Result<()> {
        self.retries.extend(failures.retries);
        self.deliver_dead_letters(failures.dead).await?;
        // Those handed to a callback (or discarded) while the batch was streamed.
        self.dead_lettered += failures.delivered;
        self.metrics.dead_letters.increment(failures.delivered);
        Ok(())
    }

    /// Finish the batch: check it is this consumer's, apply the retries, `finish_batch`, and
    /// commit, all in the batch's transaction.
    ///
    /// Refused with [`Error::NotFullyRead`] unless the batch was read to the end or the rest was
    /// explicitly skipped or retried: then nothing is finished, the transaction is rolled back
    /// and the batch comes again. Check [`Batch::can_finish`] first to keep the handle.
    pub async fn finish(mut self) -> Result<BatchSummary> {
        let batch = self.info.batch_id;
        if !self.can_finish() {
            return Err(Error::NotFullyRead {
                batch,
                read: self.read,
            });
        }
        let inner = self.inner.clone();
        let conn = &mut *self.tx;
        let failed = !self.retries.is_empty() || self.dead_lettered > 0;
        inner
            .source
            .before_finish(&mut *conn, &self.info, failed)
            .await?;
        if !self.retries.is_empty() {
            // Refuses a batch nobody holds; a batch of another consumer is refused below, and
            // the retries go with the rollback.
            pgq_core::event_retry_many(&mut *conn, batch, &self.retries).await?;
        }
        inner.source.finish_owned(conn, batch).await?;
        let read_to_end = self.is_read_to_end();
        self.tx.commit().await?;
        inner.source.batch_committed();
        let summary = BatchSummary {
            batch_id: batch,
            events: self.read,
            retried: self.retries.len() as u64,
            dead_lettered: self.dead_lettered,
            skipped_rest: self.skipped_rest && !read_to_end,
        };
        self.metrics.retries.increment(summary.retried);
        self.metrics.batches.increment(1);
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
        self.span.in_scope(|| {
            tracing::debug!(
                events = summary.events,
                retried = summary.retried,
                dead_lettered = summary.dead_lettered,
                "batch finished"
            )
        });
        Ok(summary)
    }

    /// Whether [`Batch::finish`] would accept the batch: it was read to the end, or the rest was
    /// skipped or retried.
    pub fn can_finish(&self) -> bool {
        self.is_read_to_end() || self.skipped_rest
    }

    /// Roll the batch's transaction back: nothing it did is kept and the batch is delivered
    /// again by the next `next_batch`.
    pub async fn abandon(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}
