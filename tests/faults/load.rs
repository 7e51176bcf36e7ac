//! A producer and a consumer running in this process, recording what they committed and what
//! they consumed, for the server-restart and ticker-failover tests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_consumer::{CancellationToken, Consumer, EventContext, Handler, HandlerError};
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::PgPoolOptions;
use pgq_core::{Event, NewEvent, QueueName};
use pgq_producer::Producer;
use tokio::task::JoinHandle;

use crate::support::{c, wait_for};

/// A pool that gives up quickly while the server is away, so that callers see errors.
pub(crate) fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(url)
        .unwrap()
}

/// What the producer task did.
#[derive(Default)]
pub(crate) struct Produced {
    /// Event numbers whose commit returned Ok, with when.
    pub(crate) acked: Mutex<Vec<(i64, Instant)>>,
    /// Failed sends.
    pub(crate) errors: AtomicU64,
}

/// Sends `per_round` events numbered 0.. every `every`, each round one transaction
/// (`Producer::send_batch`), until `stop` is cancelled. Failed rounds are counted and their
/// numbers never reused.
pub(crate) fn start_producer(
    url: &str,
    queue: &QueueName,
    per_round: i64,
    every: Duration,
    stop: CancellationToken,
) -> (Arc<Produced>, JoinHandle<()>) {
    let produced = Arc::new(Produced::default());
    let (pool, out, producer) = (pool(url), produced.clone(), Producer::new(queue.clone()));
    let task = tokio::spawn(async move {
        let mut next = 0i64;
        while !stop.is_cancelled() {
            let numbers: Vec<i64> = (next..next + per_round).collect();
            next += per_round;
            let events: Vec<NewEvent> = numbers
                .iter()
                .map(|n| NewEvent::new("t", n.to_string()))
                .collect();
            match producer.send_batch(&pool, &events).await {
                Ok(_) => {
                    let now = Instant::now();
                    out.acked
                        .lock()
                        .unwrap()
                        .extend(numbers.iter().map(|n| (*n, now)));
                }
                Err(_) => {
                    out.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(every).await;
        }
    });
    (produced, task)
}

impl Produced {
    pub(crate) fn acked_numbers(&self) -> Vec<i64> {
        self.acked.lock().unwrap().iter().map(|(n, _)| *n).collect()
    }

    /// The first event acknowledged after `t`.
    pub(crate) fn first_acked_after(&self, t: Instant) -> Option<(i64, Instant)> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > t)
            .copied()
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Event numbers a consumer handled.
#[derive(Clone, Default)]
pub(crate) struct Consumed(Arc<Mutex<HashSet<i64>>>);

impl Consumed {
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub(crate) fn contains(&self, n: i64) -> bool {
        self.0.lock().unwrap().contains(&n)
    }

    /// The acknowledged events not consumed.
    pub(crate) fn missing(&self, acked: &[i64]) -> Vec<i64> {
        let seen = self.0.lock().unwrap();
        acked
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect()
    }
}

impl Handler for Consumed {
    async fn handle(&self, ev: &Event, _ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let n: i64 = ev.ev_data.as_deref().unwrap_or_default().parse().unwrap();
        self.0.lock().unwrap().insert(n);
        Ok(())
    }
}

/// Register consumer `c` on `queue` (so that it sees every event from now on) and run it in a
/// task until `stop` is cancelled.
pub(crate) async fn start_consumer(
    url: &str,
    queue: &QueueName,
    stop: CancellationToken,
) -> (Consumed, JoinHandle<pgq_consumer::Result<()>>) {
    let consumer = Consumer::builder(pool(url), queue.clone(), c("c"))
        .poll_interval(Duration::from_millis(500))
        // Retries after database errors capped at 1 s (the default cap is 30 s): then "the
        // consumer recovers soon after the server is back" is a bound the fault tests can state
        // with a wide margin, instead of one the backoff may exceed by design.
        .reconnect_backoff(pgq_consumer::Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let consumed = Consumed::default();
    let handler = consumed.clone();
    let task = tokio::spawn(async move { consumer.run(handler, stop).await });
    (consumed, task)
}

/// A producer sending `per_round` events every 20 ms and a consumer, both running in tasks.
pub(crate) struct Load {
    pub(crate) produced: Arc<Produced>,
    pub(crate) consumed: Consumed,
    producer: JoinHandle<()>,
    consumer: JoinHandle<pgq_consumer::Result<()>>,
    stop_producer: CancellationToken,
    stop_consumer: CancellationToken,
}

impl Load {
    pub(crate) async fn start(url: &str, queue: &QueueName, per_round: i64) -> Load {
        let (stop_producer, stop_consumer) = (CancellationToken::new(), CancellationToken::new());
        let (consumed, consumer) = start_consumer(url, queue, stop_consumer.clone()).await;
        let every = Duration::from_millis(20);
        let (produced, producer) =
            start_producer(url, queue, per_round, every, stop_producer.clone());
        Load {
            produced,
            consumed,
            producer,
            consumer,
            stop_producer,
            stop_consumer,
        }
    }

    /// Stop the producer, wait until the consumer has every acknowledged event, then stop the
    /// consumer (which must end cleanly); the number of acknowledged events.
    pub(crate) async fn finish(self) -> usize {
        self.stop_producer.cancel();
        let acked = drain(&self.produced, &self.consumed, self.producer).await;
        self.stop_consumer.cancel();
        let consumer = self.consumer;
        consumer.await.unwrap().unwrap();
        acked
    }
}

/// Wait for the (stopped) producer task, then until the consumer has every acknowledged event;
/// the number of acknowledged events.
async fn drain(produced: &Produced, consumed: &Consumed, producer: JoinHandle<()>) -> usize {
    producer.await.unwrap();
    let acked = produced.acked_numbers();
    wait_for("every acknowledged event to be consumed", || async {
        consumed.missing(&acked).is_empty()
    })
    .await;
    acked.len()
}
