//! Consumer configuration: the builder and its option types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pgq_core::sqlx::PgPool;
use pgq_core::{BatchTuning, ConsumerName, EventFilter, QueueName, TickId};

use crate::dead_letter::DeadLetterEvent;
use crate::error::{BoxError, Error, Result};
use crate::source::{BatchSource, Subscription};
use crate::{Consumer, Inner};

/// Where a consumer starts when it is not registered yet (see [`Consumer::register`]). An
/// already registered consumer keeps its position whatever this says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Registration {
    /// At the queue's latest tick: only events produced from now on (`pgq.register_consumer`).
    #[default]
    Latest,
    /// At a given tick (`pgq.register_consumer_at`), e.g. to replay from a known point.
    AtTick(TickId),
    /// At another consumer's position on the same queue: a copy of its cursor.
    AtConsumer(ConsumerName),
    /// Never register: the consumer must already be registered (e.g. by `pgq` CLI).
    Existing,
}

/// Delivery guarantee of the run loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The batch is finished after the handler has seen every event; a crash before that
    /// redelivers the whole batch. Handlers must tolerate duplicates.
    #[default]
    AtLeastOnce,
    /// The handler gets the batch's transaction ([`crate::EventContext::transaction`]); its
    /// writes, the retries, the dead letters and `finish_batch` commit together, so each event's
    /// effect is committed exactly once. A failing handler's writes are rolled back (a savepoint
    /// per fetched chunk; the chunk is replayed without the failed event).
    ExactlyOnce,
}

/// What happens to the batch in progress when the shutdown token is cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shutdown {
    /// Handle the rest of the batch and finish it, then return.
    #[default]
    FinishBatch,
    /// Stop after the event being handled and roll the batch back: it is redelivered later
    /// (at-least-once: the events already handled come again).
    Abandon,
}

/// When the run loop of an at-least-once consumer (without event filters) may *read ahead* of
/// its open batch: hand out the events of the ticks after it without writing the consumer's
/// `pgq.subscription` row, writing it (the batch finished up to where it read, the next one
/// opened) about once a second, when an event fails, and on shutdown. Fewer writes; a consumer
/// that stops without that write gets the events since the open batch's start again (at least
/// once, as for any unfinished batch). Exactly-once delivery, event filters, per-batch handlers
/// and batches taken by hand never read ahead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadAhead {
    /// While writing the row is dear (taking and finishing a batch costs more than 2 ms: a
    /// session holds the xmin horizon and every write leaves a version the next one checks).
    #[default]
    Auto,
    /// Always (a high-rate consumer that prefers one write a second to one per batch).
    Always,
    /// Never: every batch is finished when handled.
    Off,
}

/// Exponential backoff: `initial`, then multiplied by `factor` per step, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The growth per step (at least 1).
    pub factor: f64,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            factor: 2.0,
            max,
        }
    }

    /// The same delay every time.
    pub fn constant(delay: Duration) -> Backoff {
        Backoff {
            initial: delay,
            factor: 1.0,
            max: delay,
        }
    }

    /// The delay after `attempt` earlier attempts (0 gives `initial`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.factor.max(1.0);
        let secs = self.initial.as_secs_f64() * factor.powi(attempt.min(1000) as i32);
        let max = self.max.max(self.initial);
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// Retries of failed events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many times an event is retried; an event whose handler fails again after this many
    /// retries goes to the dead-letter destination.
    pub max_retries: u32,
    /// Delay before a retried event comes back, by its retry count. The event waits in pgq's
    /// retry queue until the delay has passed; then the ticker's retry mover puts it back into
    /// the queue and the next tick delivers it. `pgq-ticker` runs its mover when the earliest
    /// retry is due (within a tick round, 1 s by default), so delays of a second or more are
    /// kept closely; pgqd moves retries only every `retry_period` (30 s by default).
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(3600)),
        }
    }
}

/// A dead-letter callback: receives the event with the reason and retry count.
pub type DeadLetterFn = Arc<
    dyn Fn(DeadLetterEvent) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        + Send
        + Sync,
>;

/// Where events go after `max_retries` failed retries (or when a handler asks for it).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum DeadLetter {
    /// The durable dead-letter table `pgq_rs.dead_letter` (the default): one row per event with
    /// the queue, the consumer, the whole event (NULL stays NULL), the retry count, the reason
    /// and the time, written in the batch's transaction (`pgq_reader` is enough). Never rotated:
    /// a dead letter stays until it is replayed or purged (`pgq dlq`, [`pgq_core::list_dead_letters`] and friends).
    #[default]
    Table,
    /// This pgq queue, inserted in the batch's transaction (`pgq_writer`). The event keeps its
    /// type, payload and extra1..3; extra4 holds [`crate::DeadLetterMeta`]. The queue must exist
    /// and have a consumer registered: pgq truncates the events of a queue nobody reads at
    /// rotation, so the run loop refuses to start otherwise.
    Queue(QueueName),
    /// This callback, awaited before the batch is finished; when it fails, the batch is not
    /// finished and comes again.
    Callback(DeadLetterFn),
    /// Drop the event (logged at `warn` and counted).
    Discard,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetter::Table => f.write_str("Table"),
            DeadLetter::Queue(q) => f.debug_tuple("Queue").field(q).finish(),
            DeadLetter::Callback(_) => f.write_str("Callback(..)"),
            DeadLetter::Discard => f.write_str("Discard"),
        }
    }
}

/// The resolved dead-letter destination.
#[derive(Clone)]
pub(crate) enum DeadLetterTarget {
    Table,
    Queue(QueueName),
    Callback(DeadLetterFn),
    Discard,
}

/// Everything a consumer is configured with (see [`ConsumerBuilder`]).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) tuning: BatchTuning,
    pub(crate) fetch_size: u32,
    pub(crate) filter: EventFilter,
    pub(crate) registration: Registration,
    pub(crate) delivery: Delivery,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter: DeadLetterTarget,
    pub(crate) poll_interval: Duration,
    pub(crate) wakeups: bool,
    pub(crate) reconnect: Backoff,
    pub(crate) shutdown: Shutdown,
    pub(crate) database_timeout: Duration,
    pub(crate) read_ahead: ReadAhead,
}

/// Builds a [`Consumer`]; start with [`Consumer::builder`] (a plain consumer) or
/// [`crate::CoopConsumer::coop_builder`] (a member of a cooperative group).
#[must_use]
pub struct ConsumerBuilder<S: BatchSource = Subscription> {
    pool: PgPool,
    source: S,
    tuning: BatchTuning,
    fetch_size: u32,
    filter: EventFilter,
    registration: Registration,
    delivery: Delivery,
    retry: RetryPolicy,
    dead_letter: DeadLetter,
    poll_interval: Duration,
    wakeups: bool,
    reconnect: Backoff,
    shutdown: Shutdown,
    database_timeout: Duration,
    read_ahead: ReadAhead,
}

impl ConsumerBuilder {
    pub(crate) fn new(pool: PgPool, queue: QueueName, consumer: ConsumerName) -> Self {
        ConsumerBuilder::with_source(pool, Subscription::new(queue, consumer))
    }

    /// Build the consumer (checks the configuration; touches no database).
    pub fn build(self) -> Result<Consumer> {
        self.build_consumer()
    }
}

impl<S: BatchSource> ConsumerBuilder<S> {
    pub(crate) fn with_source(pool: PgPool, source: S) -> Self {
        ConsumerBuilder {
            pool,
            source,
            tuning: BatchTuning::default(),
            fetch_size: 2000,
            filter: EventFilter::default(),
            registration: Registration::default(),
            delivery: Delivery::default(),
            retry: RetryPolicy::default(),
            dead_letter: DeadLetter::default(),
            poll_interval: Duration::from_secs(5),
            wakeups: true,
            reconnect: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            shutdown: Shutdown::default(),
            database_timeout: Duration::from_secs(30),
            read_ahead: ReadAhead::default(),
        }
    }

    /// Wait for batches of at least this many events (estimated; `pgq.next_batch_custom`).
    pub fn min_count(mut self, events: u32) -> Self {
        self.tuning.min_count = Some(i32::try_from(events).unwrap_or(i32::MAX));
        self
    }

    /// Wait for batches spanning at least this long.
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.tuning.min_interval = Some(interval);
        self
    }

    /// Only take batches whose end tick is at least this old (a delayed consumer).
    pub fn min_lag(mut self, lag: Duration) -> Self {
        self.tuning.min_lag = Some(lag);
        self
    }

    /// How many events are fetched per round trip (default 2000). Memory use is about this many
    /// events, whatever the batch size.
    pub fn fetch_size(mut self, events: u32) -> Self {
        self.fetch_size = events;
        self
    }

    /// Only deliver events of these types. Values are bound as parameters.
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.filter.ev_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only deliver events whose extra1 is one of these (the table name for pgq triggers).
    pub fn tables<I, T>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.filter.extra1 = tables.into_iter().map(Into::into).collect();
        self
    }

    /// Set the whole typed filter (types and extra1..extra4); values are bound as parameters.
    /// Filtered-out events are passed over when the batch is finished.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Where a new consumer starts (default: the latest tick).
    pub fn registration(mut self, registration: Registration) -> Self {
        self.registration = registration;
        self
    }

    /// At-least-once (default) or exactly-once delivery in the run loop.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Retry count and backoff for failed events (default: 5 retries, 10 s doubling to 1 h).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many retries before an event goes to the dead-letter destination.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The backoff between retries of a failed event.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry.backoff = backoff;
        self
    }

    /// Where events go after their last retry (default: the durable table, [`DeadLetter::Table`]).
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Send dead letters to this callback instead of the dead-letter table.
    pub fn dead_letter_callback<F, Fut>(self, f: F) -> Self
    where
        F: Fn(DeadLetterEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let f: DeadLetterFn = Arc::new(move |ev| Box::pin(f(ev)));
        self.dead_letter(DeadLetter::Callback(f))
    }

    /// How often the run loop checks for a batch when no wakeup came (default 5 s). With wakeups
    /// this is only the fallback for missed notifications.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether the run loop LISTENs for tick notifications (default `true`). The listener holds
    /// a connection of its own (the pool's options, outside the pool) while the loop runs.
    pub fn wakeups(mut self, on: bool) -> Self {
        self.wakeups = on;
        self
    }

    /// Backoff between attempts after database errors (default 100 ms doubling to 30 s).
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// What a shutdown does to the batch in progress (default: finish it).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// When the run loop may read ahead of its open batch instead of finishing each batch (see
    /// [`ReadAhead`]; default [`ReadAhead::Auto`]: while a held xmin horizon makes writing the
    /// consumer's row dear).
    pub fn read_ahead(mut self, read_ahead: ReadAhead) -> Self {
        self.read_ahead = read_ahead;
        self
    }

    /// How long the run loop waits for the database (default 30 s): for a connection, for a
    /// statement's answer, for the next row of a batch, for opening and finishing a batch;
    /// everything between two handler calls, never the handler's own time. On expiry the
    /// connection is dropped (never reused), the batch comes again, and the loop reconnects
    /// with backoff: a half-open connection (a network that drops packets without a FIN) costs
    /// at most this long. The tick listener and a cooperative member's heartbeat use it for
    /// each of their statements. Make it longer than the server's `statement_timeout` when that
    /// is set and batches are filtered (a filtered batch's next row can take a while).
    pub fn database_timeout(mut self, timeout: Duration) -> Self {
        self.database_timeout = timeout;
        self
    }

    /// The source, for the source-specific options.
    pub(crate) fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    fn config(&self) -> Result<Config> {
        if self.fetch_size == 0 {
            return Err(Error::Config("fetch_size must be at least 1".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("poll_interval must not be zero".into()));
        }
        if self.database_timeout.is_zero() {
            return Err(Error::Config("database_timeout must not be zero".into()));
        }
        let dead_letter = match &self.dead_letter {
            DeadLetter::Table => DeadLetterTarget::Table,
            DeadLetter::Queue(q) => DeadLetterTarget::Queue(q.clone()),
            DeadLetter::Callback(f) => DeadLetterTarget::Callback(f.clone()),
            DeadLetter::Discard => DeadLetterTarget::Discard,
        };
        if let DeadLetterTarget::Queue(q) = &dead_letter
            && q == self.source.queue()
        {
            return Err(Error::Config(format!(
                "the dead-letter queue must not be the consumed queue {q}"
            )));
        }
        Ok(Config {
            tuning: self.tuning,
            fetch_size: self.fetch_size,
            filter: self.filter.clone(),
            registration: self.registration.clone(),
            delivery: self.delivery,
            retry: self.retry,
            dead_letter,
            poll_interval: self.poll_interval,
            wakeups: self.wakeups,
            reconnect: self.reconnect,
            shutdown: self.shutdown,
            database_timeout: self.database_timeout,
            read_ahead: self.read_ahead,
        })
    }

    /// Build the consumer with this builder's source (checks the configuration; touches no
    /// database).
    pub(crate) fn build_consumer(self) -> Result<Consumer<S>> {
        let config = self.config()?;
        Ok(Consumer {
            inner: Arc::new(Inner {
                pool: self.pool,
                source: self.source,
                config,
                progress: Default::default(),
            }),
        })
    }

    /// Build a consumer reading batches from another [`BatchSource`] (e.g. one of your own)
    /// with this configuration. The queue must be the builder's queue.
    pub fn build_with_source<T: BatchSource>(self, source: T) -> Result<Consumer<T>> {
        if source.queue() != self.source.queue() {
            return Err(Error::Config(format!(
                "the batch source reads queue {}, the builder names {}",
                source.queue(),
                self.source.queue()
            )));
        }
        let config = self.config()?;
        Ok(Consumer {
            inner: Arc::new(Inner {
                pool: self.pool,
                source,
                config,
                progress: Default::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let c = Backoff::constant(Duration::from_secs(2));
        assert_eq!(c.delay(7), Duration::from_secs(2));
    }
}
