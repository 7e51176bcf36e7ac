//! Reading ahead ([`ReadAhead`]): the run loop hands out the ticks after its open batch without
//! writing the consumer's row, and writes it about once a second, when an event fails, and on a
//! clean stop. Everything is delivered; a loop dropped without that write loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_consumer::{Backoff, EventContext, Handler, HandlerError, ReadAhead};
use pgq_core::sqlx::PgPool;
use pgq_core::{Event, QueueName};
use pgq_testkit::TestDb;

use crate::common::{builder, count, produce, queue, run_with_ticker, wait_for};

/// Counts deliveries per payload; fails the payloads in `fail_once` the first time.
#[derive(Clone, Default)]
struct Counter {
    seen: Arc<Mutex<HashMap<String, u32>>>,
    fail_once: Arc<Mutex<Vec<String>>>,
}

impl Counter {
    fn seen(&self) -> HashMap<String, u32> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for Counter {
    async fn handle(&self, ev: &Event, _: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let data = ev.ev_data.clone().unwrap_or_default();
        *self.seen.lock().unwrap().entry(data.clone()).or_default() += 1;
        let mut fail = self.fail_once.lock().unwrap();
        if let Some(i) = fail.iter().position(|d| *d == data) {
            fail.remove(i);
            return Err(HandlerError::new("fails once"));
        }
        Ok(())
    }
}

/// The batch ids drawn so far (one per batch opened).
async fn batches_opened(pool: &PgPool) -> i64 {
    count(pool, "select last_value from pgq.batch_id_seq").await
}

/// Send `n` events one per transaction, `every` apart, numbered from `from`.
async fn trickle(pool: &PgPool, q: &QueueName, from: u64, n: u64, every: Duration) {
    for i in from..from + n {
        produce(pool, q, i, i + 1).await;
        tokio::time::sleep(every).await;
    }
}

/// Run a consumer in `mode` while 120 events trickle in over ~2.4 s (ticks every 50 ms); all
/// must arrive once. Returns the batches opened and the seconds it took.
async fn trickle_through(pool: &PgPool, q: &QueueName, name: &str, mode: ReadAhead) -> (i64, f64) {
    let consumer = builder(pool, q, name).read_ahead(mode).build().unwrap();
    consumer.register().await.unwrap();
    let counter = Counter::default();
    let before = batches_opened(pool).await;
    let started = Instant::now();
    let running = run_with_ticker(pool, q, &consumer, counter.clone());
    trickle(pool, q, 0, 120, Duration::from_millis(20)).await;
    wait_for("every event", || async { counter.seen().len() == 120 }).await;
    running.stop().await;
    let secs = started.elapsed().as_secs_f64();
    let seen = counter.seen();
    assert!(seen.values().all(|n| *n == 1), "once each: {seen:?}");
    // A clean stop wrote what was read ahead: nothing comes again.
    let again = Counter::default();
    let running = run_with_ticker(pool, q, &consumer, again.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    assert!(
        again.seen().is_empty(),
        "delivered again: {:?}",
        again.seen()
    );
    (batches_opened(pool).await - before, secs)
}

#[tokio::test]
async fn reading_ahead_writes_the_row_about_once_a_second_and_delivers_everything_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "ahead").await;
    let (ahead, secs) = trickle_through(pool, &q, "ahead", ReadAhead::Always).await;
    // About one write a second (each opens a batch), however many ticks came.
    assert!(
        (ahead as f64) <= secs + 4.0,
        "{ahead} batches opened in {secs:.1} s while reading ahead"
    );
    let q2 = queue(pool, "plain").await;
    let (plain, _) = trickle_through(pool, &q2, "plain", ReadAhead::Off).await;
    assert!(
        plain > 2 * ahead,
        "without reading ahead each tick is a batch: {plain} against {ahead}"
    );
}

#[tokio::test]
async fn an_event_read_ahead_that_fails_is_retried_and_a_dropped_loop_loses_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "ahead_fail").await;
    let consumer = builder(pool, &q, "c")
        .read_ahead(ReadAhead::Always)
        .max_retries(3)
        .retry_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let counter = Counter::default();
    counter
        .fail_once
        .lock()
        .unwrap()
        .extend(["5".to_owned(), "37".to_owned()]);
    let running = run_with_ticker(pool, &q, &consumer, counter.clone());
    trickle(pool, &q, 0, 60, Duration::from_millis(20)).await;
    wait_for("every event, the failed ones twice", || async {
        let seen = counter.seen();
        seen.len() == 60 && seen["5"] == 2 && seen["37"] == 2
    })
    .await;
    running.stop().await;

    // Dropped while reading ahead (no clean stop, so nothing written): a new loop delivers
    // again what came after the last write, and everything sent meanwhile. Nothing is lost.
    let dropped = Counter::default();
    let running = run_with_ticker(pool, &q, &consumer, dropped.clone());
    trickle(pool, &q, 100, 40, Duration::from_millis(20)).await;
    wait_for("the events sent while it ran", || async {
        dropped.seen().len() == 40
    })
    .await;
    running.abort().await;
    let fresh = builder(pool, &q, "c")
        .read_ahead(ReadAhead::Always)
        .build()
        .unwrap();
    let after = Counter::default();
    let running = run_with_ticker(pool, &q, &fresh, after.clone());
    trickle(pool, &q, 200, 10, Duration::from_millis(20)).await;
    wait_for("the events sent after the drop", || async {
        (200..210).all(|i| after.seen().contains_key(&i.to_string()))
    })
    .await;
    running.stop().await;
    let mut all: Vec<String> = dropped.seen().into_keys().collect();
    all.extend(after.seen().into_keys());
    for i in (100..140).chain(200..210) {
        assert!(all.contains(&i.to_string()), "event {i} lost");
    }
    assert!(
        after
            .seen()
            .keys()
            .all(|k| k.parse::<u64>().unwrap() >= 100),
        "nothing from before the last clean stop comes again"
    );
}
