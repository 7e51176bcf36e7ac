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

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgq_core::sqlx::PgConnection;
use pgq_core::{BatchId, BatchInfo, BatchTuning, ConsumerName, ErrorKind, QueueName, RowHint};

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
        // A batch opened by a finish that did not commit does not exist.
        take(&self.pending);
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
        if self.have_at.load(Ordering::Relaxed) && next_at {
            // Finish and, when a later tick exists, open the next batch: one row update.
            let started = Instant::now();
            let r =
                pgq_core::finish_next_batch_at(&mut *conn, batch, queue, consumer, CATCH_UP_EVENTS)
                    .await?;
            if let Ok(mut p) = self.pace.lock() {
                let sample = p.next + started.elapsed();
                p.cost = p.cost.mul_f64(0.75) + sample.mul_f64(0.25);
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
                // Smoothed, so that one slow moment of a busy machine does not start pacing.
                let sample = p.next + started.elapsed();
                p.cost = p.cost.mul_f64(0.75) + sample.mul_f64(0.25);
            }
            self.set(hint);
            return Ok(finished);
        }
        pgq_core::finish_own_batch(conn, batch, queue, consumer).await
    }

    /// The transaction of the last finish committed: a batch it opened is the next one.
    pub(crate) fn committed(&self) {
        if let Some(info) = take(&self.pending) {
            put(&self.ready, Some(info));
        }
    }
}
