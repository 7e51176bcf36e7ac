//! A plain subscription's batches that stay cheap while a session holds the xmin horizon.
//!
//! Every batch updates the consumer's `pgq.subscription` row twice, and while the horizon is held
//! every old version stays; `pgq.next_batch*` finds the row by its key and visits all of them, so
//! at a millisecond tick rate each batch cost more than the one before until the consumer fell
//! behind for good (P9 in the design notes). [`RowSlot`] keeps where the row was last written
//! (`pgq_core::RowHint`) and uses `pgq_rs.next_batch_at` / `pgq_rs.finish_batch_at`, which find
//! it with one lookup, and a consumer that is behind takes up to [`CATCH_UP_EVENTS`] events'
//! worth of ticks in one batch. On a schema without those functions it falls back to pgq's own.
//!
//! The two updates of each batch still cost more with every version the horizon keeps (each
//! inserts into pgq's unique primary-key index, which checks every older version of the row), so
//! the consumer also paces itself by what they cost: when taking and finishing a batch take
//! longer than [`PACE_FROM`] (smoothed over the last few batches), the next batch is asked for
//! no sooner than [`PACE_FACTOR`] times that after the previous one (at most [`PACE_MAX`]), and
//! spans everything that arrived in between. Fewer, larger batches add fewer versions, which keeps the cost from running away.
//!
//! Pacing alone still writes the row for every batch, and every version makes the next write
//! dearer for as long as the horizon is held. So while pacing, a run loop delivering at least
//! once also *reads ahead* ([`RowSlot::read_ahead`]): a batch whose events were all handled is not
//! finished; the next "batch" handed out is the events of the ticks after it
//! (`pgq_core::batch_reach`, `pgq_core::stream_events_beyond`), with no write at all, and the row
//! is written — the open batch finished as if it had ended at the last tick delivered, the next
//! one opened — only every [`AHEAD_WRITE_EVERY`], when an event fails (its retry needs the batch
//! extended over it first), or on shutdown. A consumer that stops without that write gets the
//! events since the open batch's start again: at least once, as for any unfinished batch.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgq_core::sqlx::PgConnection;
use pgq_core::{
    BatchId, BatchInfo, BatchTuning, ConsumerName, ErrorKind, QueueName, RowHint, TickId,
};

use crate::config::ReadAhead;

/// How many events (estimated from the event sequence) a batch may span when the consumer is
/// several ticks behind and no batch conditions are set: enough to catch up from a held horizon
/// in a few batches, small enough that a batch delivered again after a crash is not huge.
pub(crate) const CATCH_UP_EVENTS: i64 = 10_000;

/// Taking and finishing a batch costing more than this (they cost a fraction of a millisecond on
/// a quiet database) starts pacing.
pub(crate) const PACE_FROM: Duration = Duration::from_millis(2);

/// While pacing, at most 1 / PACE_FACTOR of the time goes to the subscription row's updates.
pub(crate) const PACE_FACTOR: u32 = 4;

/// The longest pause between two batches that pacing adds.
pub(crate) const PACE_MAX: Duration = Duration::from_millis(500);

/// While reading ahead, the consumer's row is written at least this often (finishing what was
/// delivered): the most a consumer that stops without writing gets again.
pub(crate) const AHEAD_WRITE_EVERY: Duration = Duration::from_secs(1);

/// An open batch whose events were all handled and which was not finished: the consumer reads
/// ahead of it.
#[derive(Debug, Clone)]
struct Reach {
    /// The batch open in the database (its start is the consumer's position there).
    open: BatchId,
    /// The tick up to which events were delivered (the batch's end, or a later tick).
    reached: TickId,
    /// When reading ahead of this batch began (the row was last written about then).
    since: Instant,
}

/// What the last batch's updates cost, for pacing.
#[derive(Debug, Default)]
struct Pace {
    /// When the last batch was asked for (the one that returned a batch).
    started: Option<Instant>,
    /// How long asking for it took.
    next: Duration,
    /// The cost of a batch's two updates (asking plus finishing), smoothed over the last few.
    cost: Duration,
    /// Pacing now (for logging the change once).
    pacing: bool,
}

impl Pace {
    /// Add the cost of one batch's writes, smoothed over the last few, so that one slow moment
    /// of a busy machine does not start pacing.
    fn record(&mut self, sample: Duration) {
        self.cost = self.cost.mul_f64(0.75) + sample.mul_f64(0.25);
    }

    /// How long to wait before asking for the next batch.
    fn wait(&mut self, queue: &QueueName, consumer: &ConsumerName) -> Duration {
        let pacing = self.cost > PACE_FROM;
        if pacing != self.pacing {
            self.pacing = pacing;
            if pacing {
                tracing::info!(
                    queue = %queue,
                    consumer = %consumer,
                    batch_cost_ms = self.cost.as_secs_f64() * 1000.0,
                    "taking and finishing a batch has become slow (a session holding the xmin \
                     horizon keeps every version of the consumer's pgq.subscription row; see \
                     `pgq status`): pacing batches by their cost"
                );
            } else {
                tracing::info!(queue = %queue, consumer = %consumer, "batches are cheap again: pacing off");
            }
        }
        let (true, Some(started)) = (pacing, self.started) else {
            return Duration::ZERO;
        };
        (self.cost * PACE_FACTOR)
            .min(PACE_MAX)
            .saturating_sub(started.elapsed())
    }
}

/// The last known place of one consumer's subscription row, shared by clones of its source.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowSlot {
    hint: Arc<Mutex<Option<RowHint>>>,
    /// The database has no `pgq_rs.next_batch_at` (schema older than this build): pgq's own
    /// functions are used.
    plain: Arc<AtomicBool>,
    /// `pgq_rs.next_batch_at` answered once, so `pgq_rs.finish_batch_at` exists too (an error
    /// inside a batch's transaction would abort it: never probe there).
    have_at: Arc<AtomicBool>,
    pace: Arc<Mutex<Pace>>,
    /// Whether the database has `pgq_rs.finish_next_batch_at` (`None`: not asked yet).
    have_next_at: Arc<Mutex<Option<bool>>>,
    /// The last batch was asked for without conditions, so finishing may open the next one.
    spanning: Arc<AtomicBool>,
    /// A batch opened by the last finish, in a transaction not known to have committed.
    pending: Arc<Mutex<Option<BatchInfo>>>,
    /// A batch opened by a finish whose transaction committed: the next batch to hand out.
    ready: Arc<Mutex<Option<BatchInfo>>>,
    /// When reading ahead is allowed (a run loop delivering at least once, without filters);
    /// `None`: not allowed (no such loop runs).
    ahead_mode: Arc<Mutex<Option<ReadAhead>>>,
    /// Reading ahead of this open batch (its events handled, not finished).
    reach: Arc<Mutex<Option<Reach>>>,
    /// The part read ahead that was handed out last (a `BatchInfo` with the open batch's id,
    /// from the tick reached to a later one).
    ahead: Arc<Mutex<Option<BatchInfo>>>,
    /// Set when finishing a batch without writing, in a transaction not known to have committed.
    soft: Arc<Mutex<Option<Reach>>>,
    /// The batch being finished must be written (some of its events failed).
    must_write: Arc<AtomicBool>,
    /// The batch being finished (from [`RowSlot::before_finish`]).
    finishing: Arc<Mutex<Option<BatchInfo>>>,
}

/// Take what a slot's mutex holds (a poisoned lock holds nothing usable).
fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().ok().and_then(|mut v| v.take())
}

/// Put a value into a slot's mutex.
fn put<T>(m: &Mutex<Option<T>>, v: Option<T>) {
    if let Ok(mut slot) = m.lock() {
        *slot = v;
    }
}

/// Every slot is equal: it is a cache, not part of a subscription's identity.
impl PartialEq for RowSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RowSlot {}

impl RowSlot {
    fn take(&self) -> Option<RowHint> {
        self.hint.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn set(&self, hint: Option<RowHint>) {
        if let Ok(mut h) = self.hint.lock() {
            *h = hint;
        }
    }

    /// The next batch: with `tuning` conditions, `pgq.next_batch_custom` as asked; without,
    /// `pgq_rs.next_batch_at` (spanning up to [`CATCH_UP_EVENTS`]) through the hint.
    pub(crate) async fn next_batch(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        consumer: &ConsumerName,
        tuning: BatchTuning,
    ) -> pgq_core::Result<Option<BatchInfo>> {
        // A batch opened by a finish that did not commit does not exist; a batch finished
        // without writing in a transaction that did not commit was not finished.
        take(&self.pending);
        take(&self.soft);
        take(&self.ahead);
        if let Some(reach) = take(&self.reach) {
            match self.next_ahead(conn, queue, consumer, reach).await {
                Ok(Some(next)) => return Ok(next),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(queue = %queue, consumer = %consumer, error = %e,
                        "reading ahead failed: taking batches again");
                }
            }
        }
        let spanning = tuning == BatchTuning::default() && !self.plain.load(Ordering::Relaxed);
        self.spanning.store(spanning, Ordering::Relaxed);
        if !spanning {
            take(&self.ready);
        }
        if spanning {
            let known = self.have_next_at.lock().ok().and_then(|v| *v);
            if known.is_none() {
                // Asked once, outside any batch transaction (an error there would abort it).
                let has = pgq_core::has_finish_next(&mut *conn).await.unwrap_or(false);
                put(&self.have_next_at, Some(has));
            }
            let hint = self.take();
            let wait = self
                .pace
                .lock()
                .map_or(Duration::ZERO, |mut p| p.wait(queue, consumer));
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Some(info) = take(&self.ready) {
                // Opened by the last finish, in its committed transaction.
                if let Ok(mut p) = self.pace.lock() {
                    p.started = Some(Instant::now());
                    p.next = Duration::ZERO;
                }
                return Ok(Some(info));
            }
            let started = Instant::now();
            match pgq_core::next_batch_at(
                &mut *conn,
                queue,
                consumer,
                hint.as_ref(),
                CATCH_UP_EVENTS,
            )
            .await
            {
                Ok((info, hint)) => {
                    self.have_at.store(true, Ordering::Relaxed);
                    self.set(hint);
                    if info.is_some()
                        && let Ok(mut p) = self.pace.lock()
                    {
                        p.started = Some(started);
                        p.next = started.elapsed();
                    }
                    return Ok(info);
                }
                Err(e) if e.kind() == ErrorKind::PgqNotInstalled => {
                    tracing::info!(
                        queue = %queue,
                        consumer = %consumer,
                        "pgq_rs.next_batch_at is missing (schema older than this build; run \
                         `pgq install`): using pgq.next_batch, which slows down while a session \
                         holds the xmin horizon"
                    );
                    self.plain.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        pgq_core::next_batch_custom(conn, queue, consumer, tuning).await
    }

    /// Finish `batch` if `consumer` holds it on `queue` (ownership check and finish in one
    /// statement), remembering where the row went; `false` when nothing was finished.
    pub(crate) async fn finish_own(
        &self,
        conn: &mut PgConnection,
        batch: BatchId,
        queue: &QueueName,
        consumer: &ConsumerName,
    ) -> pgq_core::Result<bool> {
        let next_at = self.spanning.load(Ordering::Relaxed)
            && self.have_next_at.lock().ok().and_then(|v| *v) == Some(true);
        let must_write = self.must_write.swap(false, Ordering::Relaxed);
        let ahead = take(&self.ahead);
        if let Some(part) = &ahead
            && part.batch_id == batch
            && !must_write
        {
            // A part read ahead, all handled: nothing to write yet.
            let since = self.reach_since(batch).unwrap_or_else(Instant::now);
            put(
                &self.soft,
                Some(Reach {
                    open: batch,
                    reached: part.cur_tick_id,
                    since,
                }),
            );
            return Ok(true);
        }
        if ahead.is_none()
            && !must_write
            && next_at
            && self.have_at.load(Ordering::Relaxed)
            && self.ahead_now()
            && let Some(end) = self.open_end(batch)
        {
            // All handled, and writes are dear: read ahead of this batch instead of finishing it.
            put(
                &self.soft,
                Some(Reach {
                    open: batch,
                    reached: end,
                    since: Instant::now(),
                }),
            );
            return Ok(true);
        }
        // Written now: whatever was read ahead of is finished with it.
        take(&self.reach);
        if self.have_at.load(Ordering::Relaxed) && next_at {
            // Finish and, when a later tick exists, open the next batch: one row update.
            let started = Instant::now();
            let r = pgq_core::finish_next_batch_at(
                &mut *conn,
                batch,
                queue,
                consumer,
                CATCH_UP_EVENTS,
                None,
            )
            .await?;
            if let Ok(mut p) = self.pace.lock() {
                let sample = p.next + started.elapsed();
                p.record(sample);
            }
            put(&self.pending, r.next);
            self.set(r.hint);
            return Ok(r.finished);
        }
        if self.have_at.load(Ordering::Relaxed) {
            let started = Instant::now();
            let hint = pgq_core::finish_own_batch_at(&mut *conn, batch, queue, consumer).await?;
            let finished = hint.is_some();
            if let Ok(mut p) = self.pace.lock() {
                let sample = p.next + started.elapsed();
                p.record(sample);
            }
            self.set(hint);
            return Ok(finished);
        }
        pgq_core::finish_own_batch(conn, batch, queue, consumer).await
    }

    /// The transaction of the last finish committed: a batch it opened is the next one; a batch
    /// finished without writing is read ahead of.
    pub(crate) fn committed(&self) {
        if let Some(info) = take(&self.pending) {
            put(&self.ready, Some(info));
        }
        if let Some(reach) = take(&self.soft) {
            put(&self.reach, Some(reach));
        }
    }

    /// When to read ahead ([`ReadAhead::Off`]: never, and forget what was read ahead: the
    /// events since the open batch's start come again unless [`RowSlot::write_reached`] wrote
    /// them first).
    pub(crate) fn read_ahead(&self, mode: ReadAhead) {
        if let Ok(mut m) = self.ahead_mode.lock() {
            *m = (mode != ReadAhead::Off).then_some(mode);
        }
        if mode == ReadAhead::Off {
            take(&self.reach);
            take(&self.ahead);
            take(&self.soft);
        }
    }

    /// Whether to read ahead now: as configured, and with [`ReadAhead::Auto`] while the
    /// consumer paces itself (writing its row is dear).
    fn ahead_now(&self) -> bool {
        match self.ahead_mode.lock().map_or(None, |m| *m) {
            Some(ReadAhead::Always) => true,
            Some(ReadAhead::Auto) => self.pacing(),
            _ => false,
        }
    }

    /// The part read ahead that `info` is, as the range of ticks its events are between.
    pub(crate) fn ahead_range(&self, info: &BatchInfo) -> Option<(TickId, TickId)> {
        let ahead = self.ahead.lock().ok()?;
        let part = ahead.as_ref()?;
        (part == info).then_some((part.prev_tick_id, part.cur_tick_id))
    }

    /// `info` is about to be finished, in its transaction; `failed`: some of its events are
    /// retried or dead-lettered. A batch with failures is written when finished, and a part read
    /// ahead becomes part of the open batch first (so that `pgq.event_retry` finds its events
    /// there).
    pub(crate) async fn before_finish(
        &self,
        conn: &mut PgConnection,
        info: &BatchInfo,
        failed: bool,
        queue: &QueueName,
        consumer: &ConsumerName,
    ) -> pgq_core::Result<()> {
        put(&self.finishing, Some(info.clone()));
        self.must_write.store(failed, Ordering::Relaxed);
        if !failed || self.ahead_range(info).is_none() {
            return Ok(());
        }
        take(&self.ahead);
        let hint =
            pgq_core::extend_batch_at(conn, info.batch_id, queue, consumer, info.cur_tick_id)
                .await?;
        if hint.is_none() {
            return Err(pgq_core::Error::batch_not_open(info.batch_id));
        }
        self.set(hint);
        Ok(())
    }

    /// Write what was read ahead (on a clean stop): the open batch finished up to the tick
    /// reached. Nothing to do when not reading ahead.
    pub(crate) async fn write_reached(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        consumer: &ConsumerName,
    ) -> pgq_core::Result<()> {
        let Some(reach) = take(&self.reach) else {
            return Ok(());
        };
        self.write(conn, queue, consumer, &reach).await?;
        Ok(())
    }

    /// Write what was read ahead of `reach`: its open batch finished at the tick reached, and the
    /// next one opened when a later tick exists (`FinishedNext::next`).
    async fn write(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        consumer: &ConsumerName,
        reach: &Reach,
    ) -> pgq_core::Result<pgq_core::FinishedNext> {
        let r = pgq_core::finish_next_batch_at(
            conn,
            reach.open,
            queue,
            consumer,
            CATCH_UP_EVENTS,
            Some(reach.reached),
        )
        .await?;
        self.set(r.hint.clone());
        Ok(r)
    }

    /// Whether the consumer is reading ahead of an open batch (it has events to write).
    pub(crate) fn reading_ahead(&self) -> bool {
        self.reach.lock().is_ok_and(|r| r.is_some())
    }

    /// Whether taking and finishing batches costs enough that the consumer paces itself.
    fn pacing(&self) -> bool {
        self.pace.lock().is_ok_and(|p| p.cost > PACE_FROM)
    }

    /// When reading ahead of open batch `batch` began (still reading ahead of it).
    fn reach_since(&self, batch: BatchId) -> Option<Instant> {
        let reach = self.reach.lock().ok()?;
        reach.as_ref().filter(|r| r.open == batch).map(|r| r.since)
    }

    /// The end tick of `batch` when it is the one being finished.
    fn open_end(&self, batch: BatchId) -> Option<TickId> {
        let finishing = self.finishing.lock().ok()?;
        finishing
            .as_ref()
            .filter(|i| i.batch_id == batch)
            .map(|i| i.cur_tick_id)
    }

    /// Reading ahead of `reach`: every [`AHEAD_WRITE_EVERY`] (or once pacing stopped) write it
    /// and hand out the next batch; else the next part read ahead, or `Some(None)` when there is
    /// no later tick yet. `None`: not reading ahead any more (nothing handed out).
    async fn next_ahead(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        consumer: &ConsumerName,
        reach: Reach,
    ) -> pgq_core::Result<Option<Option<BatchInfo>>> {
        if reach.since.elapsed() >= AHEAD_WRITE_EVERY || !self.ahead_now() {
            let started = Instant::now();
            let r = self.write(conn, queue, consumer, &reach).await?;
            if let Ok(mut p) = self.pace.lock() {
                p.record(started.elapsed());
                p.started = Some(started);
                p.next = Duration::ZERO;
            }
            if !r.finished {
                return Ok(None);
            }
            return Ok(Some(r.next));
        }
        let part =
            pgq_core::batch_reach(&mut *conn, reach.open, reach.reached, CATCH_UP_EVENTS).await?;
        put(&self.reach, Some(reach));
        put(&self.ahead, part.clone());
        Ok(Some(part))
    }
}
