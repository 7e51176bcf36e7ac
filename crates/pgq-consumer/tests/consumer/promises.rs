//! README promises of the run loop that only a real delay, a real failure or a real recorder can
//! show: retry delays (the policy's and `HandlerError::retry_after`), the exactly-once retry
//! path, the database-error backoff cap, `Shutdown::Abandon`, `run_batches`, the metrics, and
//! catching up on ticks missed while the tick listener was down.
//!
//! Every timing check here is a lower bound ("not before"), or a count that only a broken build
//! could miss by a wide margin: a busy machine makes them pass more slowly, never fail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pgq_consumer::{
    Backoff, Batch, BatchHandler, BatchSource, Delivery, EventContext, Handler, HandlerError,
    Shutdown, Subscription, handler_fn,
};
use pgq_core::Event;
use pgq_core::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use pgq_core::sqlx::{Connection, PgPool};
use pgq_testkit::TestDb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::{builder, c, count, exec, produce, queue, tick, ticker, wait_for};

#[derive(Debug)]
struct Fail(&'static str);

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fail: {}", self.0)
    }
}

impl std::error::Error for Fail {}

/// One delivery of an event to a handler: its retry count, and when (both clocks).
#[derive(Debug, Clone, Copy)]
struct Delivered {
    retry: Option<i32>,
    at: Instant,
    wall: DateTime<Utc>,
}

/// Run a consumer built by `build` over one event whose first delivery fails with `fail()`
/// (later ones succeed), with a stand-in ticker moving due retries every 50 ms. Returns the two
/// deliveries and the event's `ev_retry_after` as it sat in `pgq.retry_queue`.
async fn first_retry(
    name: &str,
    build: impl FnOnce(pgq_consumer::ConsumerBuilder) -> pgq_consumer::ConsumerBuilder,
    fail: fn() -> HandlerError,
) -> (Delivered, Delivered, DateTime<Utc>) {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, name).await;
    let consumer = build(builder(pool, &q, "c").poll_interval(Duration::from_millis(50)))
        .max_retries(3)
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let seen: Arc<Mutex<Vec<Delivered>>> = Default::default();
    let sink = seen.clone();
    let handler = handler_fn(move |ev: Event| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(Delivered {
                retry: ev.ev_retry,
                at: Instant::now(),
                wall: Utc::now(),
            });
            if ev.ev_retry.is_none() {
                return Err(fail());
            }
            Ok(())
        }
    });
    produce(pool, &q, 0, 1).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    // The failed event waits in the retry queue; note when it is due (it may be seen only if
    // the delay is kept: an ignored delay moves it back within one 50 ms round).
    let retry_after: Arc<Mutex<Option<DateTime<Utc>>>> = Default::default();
    wait_for("the event to be delivered again", || {
        let (pool, seen, noted) = (pool.clone(), seen.clone(), retry_after.clone());
        async move {
            let due: Option<DateTime<Utc>> = pgq_core::sqlx::query_scalar(
                "select ev_retry_after from pgq.retry_queue order by ev_id limit 1",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some(due) = due {
                *noted.lock().unwrap() = Some(due);
            }
            seen.lock().unwrap().len() >= 2
        }
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].retry, None);
    assert_eq!(seen[1].retry, Some(1));
    let retry_after = retry_after.lock().unwrap().expect(
        "the failed event was never seen waiting in pgq.retry_queue: its delay was not kept",
    );
    (seen[0], seen[1], retry_after)
}

/// `ev_retry_after` is at least `delay` after the failure, and the event came back no sooner.
fn assert_kept_delay(first: Delivered, second: Delivered, due: DateTime<Utc>, delay: Duration) {
    // Both clocks are this machine's; timestamps have microsecond precision.
    let slack = Duration::from_millis(5);
    let planned = (due - first.wall).to_std().unwrap_or_default();
    assert!(
        planned + slack >= delay,
        "the retry was due {planned:?} after the failure, wanted at least {delay:?}"
    );
    assert!(
        planned < delay + Duration::from_secs(60),
        "the retry was due {planned:?} after the failure, far more than {delay:?}"
    );
    let gap = second.at - first.at;
    assert!(
        gap + slack >= delay,
        "the event came back {gap:?} after failing, before its {delay:?} delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_does_not_come_back_before_its_backoff_delay() {
    let delay = Duration::from_secs(2);
    let (first, second, due) = first_retry(
        "backoff_delay",
        |b| b.retry_backoff(Backoff::constant(delay)),
        || HandlerError::new(Fail("first delivery")),
    )
    .await;
    assert_kept_delay(first, second, due, delay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_overrides_the_policy_delay() {
    // The policy says "at once"; the handler asks for 2 s.
    let delay = Duration::from_secs(2);
    let (first, second, due) = first_retry(
        "retry_after",
        |b| b.retry_backoff(Backoff::constant(Duration::ZERO)),
        || HandlerError::retry_after(Fail("not yet"), Duration::from_secs(2)),
    )
    .await;
    assert_kept_delay(first, second, due, delay);
}

/// Exactly-once: writes `(ev_id, data, ev_retry)` into `target` in the batch's transaction, then
/// fails the first delivery of event "3".
struct WriteThenFailOnce {
    calls: Mutex<BTreeMap<String, u32>>,
}

impl Handler for WriteThenFailOnce {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let data = ev.ev_data.clone().unwrap();
        *self.calls.lock().unwrap().entry(data.clone()).or_default() += 1;
        let tx = ctx
            .transaction()
            .expect("exactly-once gives the transaction");
        pgq_core::sqlx::query("insert into target (ev_id, data, retry) values ($1, $2, $3)")
            .bind(ev.ev_id)
            .bind(&data)
            .bind(ev.ev_retry)
            .execute(&mut *tx)
            .await?;
        if data == "3" && ev.ev_retry.is_none() {
            return Err(HandlerError::new(Fail("after writing")));
        }
        Ok(())
    }
}

/// The exactly-once retry path: the failed delivery's write is rolled back with the savepoint
/// (and so are the writes of the chunk's events before it, which are replayed), the event comes
/// back through the retry queue, and its successful retry is written once. No duplicate of any
/// event (`target` has no key, so a duplicate shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_retries_a_failed_event_and_writes_it_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(
        pool,
        "create table target (ev_id bigint, data text, retry int)",
    )
    .await;
    let q = queue(pool, "eo_retry").await;
    let consumer = builder(pool, &q, "c")
        .delivery(Delivery::ExactlyOnce)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .max_retries(3)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 6).await;
    let handler = Arc::new(WriteThenFailOnce {
        calls: Default::default(),
    });
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown, handler) = (consumer.clone(), shutdown.clone(), handler.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    wait_for("the retried event to be written", || async {
        count(
            pool,
            "select count(*) from target where data = '3' and retry = 1",
        )
        .await
            > 0
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();

    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(calls["3"], 2, "failed once, then retried: {calls:?}");
    assert_eq!(count(pool, "select count(*) from target").await, 6);
    assert_eq!(
        count(pool, "select count(distinct ev_id) from target").await,
        6,
        "every event written exactly once"
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from target where data = '3' and retry = 1"
        )
        .await,
        1,
        "event 3 is written by its retry only: the failed delivery's write was rolled back"
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from target where data <> '3' and retry is not null"
        )
        .await,
        0
    );
    assert_eq!(count(pool, "select count(*) from pgq.retry_queue").await, 0);
    assert_eq!(
        count(pool, "select count(*) from pgq_rs.dead_letter").await,
        0
    );
}

/// Labels of one consumer's series in the Prometheus text format.
fn series(name: &str, queue: &str) -> String {
    format!("{name}{{queue=\"{queue}\",consumer=\"c\"}}")
}

/// The process-wide metrics recorder of this test binary (installed once; tests keep apart by
/// their queue names).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the metrics recorder")
    })
}

/// The value of the series `name` of `queue`'s consumer "c" (0 when not reported yet).
fn metric(name: &str, queue: &str) -> f64 {
    let want = series(name, queue);
    recorder()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_reports_its_metrics() {
    recorder();
    let db = TestDb::new().await;
    let pool = db.pool();
    let name = "metrics_q";
    let q = queue(pool, name).await;
    let consumer_pool = named_pool(&db, "metrics_consumer").await;
    let consumer = builder(&consumer_pool, &q, "c")
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .max_retries(1)
        .poll_interval(Duration::from_millis(50))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    // Event "1" always fails: delivered, retried once, then a dead letter.
    let handler = handler_fn(|ev: Event| async move {
        if ev.ev_data.as_deref() == Some("1") {
            return Err(HandlerError::new(Fail("always")));
        }
        Ok(())
    });
    produce(pool, &q, 0, 3).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    wait_for("the dead letter", || async {
        count(pool, "select count(*) from pgq_rs.dead_letter").await == 1
            && metric("pgq_consumer_dead_letters_total", name) == 1.0
    })
    .await;
    assert_eq!(
        metric("pgq_consumer_events_total", name),
        4.0,
        "3 events + 1 retry"
    );
    assert_eq!(metric("pgq_consumer_retries_total", name), 1.0);
    assert!(metric("pgq_consumer_batches_total", name) >= 2.0);
    assert!(metric("pgq_consumer_batch_duration_seconds_count", name) >= 2.0);
    let text = recorder().render();
    assert!(
        text.contains(&series("pgq_consumer_lag_seconds", name)),
        "no lag gauge:\n{text}"
    );
    assert_eq!(metric("pgq_consumer_listener_reconnects_total", name), 0.0);

    // The listener loses its session: one reconnect.
    wait_for("the listener", || async {
        count(
            pool,
            "select count(*) from pg_stat_activity \
             where application_name = 'metrics_consumer' and query like 'LISTEN%'",
        )
        .await
            == 1
    })
    .await;
    exec(
        pool,
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where application_name = 'metrics_consumer' and query like 'LISTEN%'",
    )
    .await;
    wait_for("a listener reconnect to be counted", || async {
        metric("pgq_consumer_listener_reconnects_total", name) >= 1.0
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();
    assert_eq!(metric("pgq_consumer_listener_reconnects_total", name), 1.0);
    assert_eq!(metric("pgq_consumer_dead_letters_total", name), 1.0);
}

/// A pool whose sessions carry `application_name`, so a test can find and kill them.
async fn named_pool(db: &TestDb, app: &str) -> PgPool {
    let opts: PgConnectOptions = db.url().parse().unwrap();
    PgPoolOptions::new()
        .max_connections(3)
        .connect_with(opts.application_name(app))
        .await
        .unwrap()
}

/// Database errors back off exponentially but never longer than `reconnect_backoff`'s `max`:
/// while every round fails (a lock makes `next_batch` hit `statement_timeout`), the loop keeps
/// trying about every `max`. With the cap ignored (25 ms growing ×4: 0.1, 0.4, 1.6, 6.4 s), six
/// seconds would hold at most six attempts; capped at 100 ms, dozens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_back_off_no_longer_than_the_cap() {
    recorder();
    let db = TestDb::new().await;
    let pool = db.pool();
    let name = "backoff_cap";
    let q = queue(pool, name).await;
    let opts: PgConnectOptions = db.url().parse().unwrap();
    let consumer_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(opts.options([("statement_timeout", "100")]))
        .await
        .unwrap();
    let consumer = builder(&consumer_pool, &q, "c")
        .poll_interval(Duration::from_millis(50))
        .reconnect_backoff(Backoff {
            initial: Duration::from_millis(25),
            factor: 4.0,
            max: Duration::from_millis(100),
        })
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let shutdown = CancellationToken::new();
    let handler = handler_fn(|_ev: Event| async { Ok::<_, HandlerError>(()) });
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    // Running: an idle round has taken a batch-less look.
    produce(pool, &q, 0, 1).await;
    tick(pool, &q).await;
    wait_for("the event to be consumed", || async {
        pgq_core::get_consumer_info(pool, &q, &c("c"))
            .await
            .unwrap()
            .is_some_and(|i| i.pending_events == 0 && i.current_batch.is_none())
    })
    .await;
    let errors = || metric("pgq_consumer_errors_total", name);
    let before = errors();
    let mut locker = pool.acquire().await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    pgq_core::sqlx::query("lock table pgq.subscription in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = errors() - before;
    eprintln!("{during} failed rounds while the lock was held");
    tx.rollback().await.unwrap();
    drop(locker);
    // It recovers by itself once the lock is gone.
    produce(pool, &q, 1, 2).await;
    tick(pool, &q).await;
    wait_for("the event after the errors", || async {
        pgq_core::get_consumer_info(pool, &q, &c("c"))
            .await
            .unwrap()
            .is_some_and(|i| i.pending_events == 0 && i.current_batch.is_none())
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(
        during >= 12.0,
        "{during} failed rounds in 6 s with the backoff capped at 100 ms"
    );
}

/// `Shutdown::Abandon` on a plain consumer: the loop stops after the event being handled, the
/// batch is rolled back and comes again whole (same batch id) to the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandon_rolls_the_batch_back_for_redelivery() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "abandon").await;
    let consumer = builder(pool, &q, "c")
        .shutdown(Shutdown::Abandon)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    tick(pool, &q).await;

    /// Blocks in its first event until released; records (batch id, data) of what it handles.
    struct Blocking {
        started: Notify,
        release: Notify,
        seen: Mutex<Vec<(i64, String)>>,
    }
    impl Handler for Blocking {
        async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
            let first = {
                let mut seen = self.seen.lock().unwrap();
                seen.push((ctx.batch().batch_id.0, ev.ev_data.clone().unwrap()));
                seen.len() == 1
            };
            if first {
                self.started.notify_one();
                self.release.notified().await;
            }
            Ok(())
        }
    }
    let handler = Arc::new(Blocking {
        started: Notify::new(),
        release: Notify::new(),
        seen: Default::default(),
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown, handler) = (consumer.clone(), shutdown.clone(), handler.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    handler.started.notified().await;
    shutdown.cancel();
    handler.release.notify_one();
    run.await.unwrap().unwrap();
    let first_run = handler.seen.lock().unwrap().clone();
    assert_eq!(
        first_run.len(),
        1,
        "stopped after the event being handled: {first_run:?}"
    );
    let batch_id = first_run[0].0;
    let info = pgq_core::get_consumer_info(pool, &q, &c("c"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        info.pending_events, 0,
        "the batch was not finished: {info:?}"
    );

    // The next run gets the same batch, every event of it.
    let again: Arc<Mutex<Vec<(i64, String)>>> = Default::default();
    let sink = again.clone();
    struct Record(Arc<Mutex<Vec<(i64, String)>>>);
    impl Handler for Record {
        async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
            self.0
                .lock()
                .unwrap()
                .push((ctx.batch().batch_id.0, ev.ev_data.clone().unwrap()));
            Ok(())
        }
    }
    let consumer = builder(pool, &q, "c")
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(Record(sink), shutdown).await }
    });
    wait_for("the batch again", || async {
        again.lock().unwrap().len() >= 5
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let again = again.lock().unwrap().clone();
    let data: Vec<&str> = again.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(data, ["0", "1", "2", "3", "4"]);
    assert!(
        again.iter().all(|(b, _)| *b == batch_id),
        "the same batch {batch_id} again: {again:?}"
    );
}

/// A batch handler, by the retry count of the batch's events:
/// first delivery: writes every event into `target` in the batch's transaction, then fails;
/// first retry: reads one event only and returns `Ok` (not read to the end: a failure);
/// second retry: writes every event and succeeds; it also retries event "1" by hand once.
struct ByRound {
    rounds: Mutex<Vec<(Option<i32>, usize)>>,
}

impl BatchHandler for ByRound {
    async fn handle_batch(&self, batch: &mut Batch<'_>) -> Result<(), HandlerError> {
        let Some(first) = batch.next_event().await? else {
            return Ok(()); // an empty batch
        };
        let mut events = vec![first];
        match events[0].ev_retry {
            Some(1) => {
                self.rounds.lock().unwrap().push((Some(1), 1));
                return Ok(());
            }
            _ => {
                while let Some(ev) = batch.next_event().await? {
                    events.push(ev);
                }
            }
        }
        let retry = events[0].ev_retry;
        self.rounds.lock().unwrap().push((retry, events.len()));
        for ev in &events {
            pgq_core::sqlx::query("insert into target (ev_id, data, retry) values ($1, $2, $3)")
                .bind(ev.ev_id)
                .bind(&ev.ev_data)
                .bind(ev.ev_retry)
                .execute(&mut *batch.conn())
                .await?;
        }
        match retry {
            None => Err(HandlerError::new(Fail("batch"))),
            Some(2) => {
                for ev in &events {
                    if ev.ev_data.as_deref() == Some("1") {
                        batch.retry(ev, Duration::ZERO);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_batches_rolls_back_a_failed_batch_and_retries_its_events() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(
        pool,
        "create table target (ev_id bigint, data text, retry int)",
    )
    .await;
    let q = queue(pool, "batches").await;
    let consumer = builder(pool, &q, "c")
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .max_retries(5)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 3).await;
    let handler = Arc::new(ByRound {
        rounds: Default::default(),
    });
    struct Shared(Arc<ByRound>);
    impl BatchHandler for Shared {
        async fn handle_batch(&self, batch: &mut Batch<'_>) -> Result<(), HandlerError> {
            self.0.handle_batch(batch).await
        }
    }
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown, handler) = (consumer.clone(), shutdown.clone(), handler.clone());
        async move { consumer.run_batches(Shared(handler), shutdown).await }
    });
    wait_for("event 1 retried by hand", || async {
        count(pool, "select count(*) from target where retry = 3").await == 1
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();

    let rounds = handler.rounds.lock().unwrap().clone();
    assert_eq!(
        rounds,
        [(None, 3), (Some(1), 1), (Some(2), 3), (Some(3), 1)],
        "(retry count, events seen) of each non-empty batch"
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from target where retry is null or retry = 1"
        )
        .await,
        0,
        "the failed batch's writes were rolled back"
    );
    assert_eq!(
        count(pool, "select count(*) from target where retry = 2").await,
        3
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from target where retry = 3 and data = '1'"
        )
        .await,
        1,
        "Batch::retry in a batch handler puts the event back"
    );
    assert_eq!(
        count(pool, "select count(*) from pgq_rs.dead_letter").await,
        0
    );
}

/// Ticks that come while the tick listener is down are not missed: once it listens again, the
/// loop looks for batches, without waiting for its poll interval (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_ticked_while_the_listener_was_down_are_caught_up() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "missed").await;
    let role = db.create_role("missed", "pgq_reader", None).await;
    let consumer_pool = db.pool_as(&role).await;
    let consumer = builder(&consumer_pool, &q, "c")
        .poll_interval(Duration::from_secs(3600))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(200),
        ))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let sink = seen.clone();
    let handler = handler_fn(move |ev: Event| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(ev.ev_data.unwrap());
            Ok(())
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    let listeners = format!(
        "select count(*) from pg_stat_activity where usename = '{role}' and query like 'LISTEN%'"
    );
    wait_for("the listener", || async {
        count(pool, &listeners).await == 1
    })
    .await;
    produce(pool, &q, 0, 1).await;
    tick(pool, &q).await;
    wait_for("the first event, woken by its tick", || async {
        seen.lock().unwrap().len() == 1
    })
    .await;

    // The role may keep the sessions it has (the loop's pooled one) but open no new one: the
    // listener, once killed, cannot come back.
    let sessions = count(
        pool,
        &format!("select count(*) from pg_stat_activity where usename = '{role}'"),
    )
    .await;
    exec(
        pool,
        &format!("alter role \"{role}\" connection limit {}", sessions - 1),
    )
    .await;
    exec(
        pool,
        &format!(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where usename = '{role}' and query like 'LISTEN%'"
        ),
    )
    .await;
    wait_for("the listener to be gone", || async {
        count(pool, &listeners).await == 0
    })
    .await;
    // The loop has looked once after losing its listener; then ticks come with nobody listening.
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce(pool, &q, 1, 2).await;
    tick(pool, &q).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing could wake the consumer yet (the test's premise)"
    );
    exec(pool, &format!("alter role \"{role}\" connection limit -1")).await;
    wait_for("the event ticked while nobody listened", || async {
        seen.lock().unwrap().len() == 2
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), ["0", "1"]);
}

/// A source that hands out another consumer's batch (a buggy custom source): the batch must
/// never be finished through it. `own_finish` picks the finish: the trait's default (the owner
/// checked, then `finish_batch`) or the plain subscription's one-statement check and finish.
struct Hijack {
    me: Subscription,
    victim: Subscription,
    own_finish: bool,
}

impl BatchSource for Hijack {
    fn queue(&self) -> &pgq_core::QueueName {
        self.me.queue()
    }

    fn consumer(&self) -> &pgq_core::ConsumerName {
        self.me.consumer()
    }

    async fn next_batch(
        &self,
        conn: &mut pgq_core::sqlx::PgConnection,
        tuning: pgq_core::BatchTuning,
    ) -> pgq_core::Result<Option<pgq_core::BatchInfo>> {
        self.victim.next_batch(conn, tuning).await
    }

    async fn register(
        &self,
        pool: &PgPool,
        registration: &pgq_consumer::Registration,
    ) -> pgq_consumer::Result<bool> {
        self.me.register(pool, registration).await
    }

    async fn unregister(&self, pool: &PgPool) -> pgq_consumer::Result<()> {
        self.me.unregister(pool).await
    }

    async fn finish_batch(
        &self,
        conn: &mut pgq_core::sqlx::PgConnection,
        batch: pgq_core::BatchId,
    ) -> pgq_core::Result<()> {
        pgq_core::finish_batch(conn, batch).await
    }

    async fn finish_owned(
        &self,
        conn: &mut pgq_core::sqlx::PgConnection,
        batch: pgq_core::BatchId,
    ) -> pgq_consumer::Result<()> {
        if self.own_finish {
            return self.me.finish_owned(conn, batch).await;
        }
        // The trait's default.
        self.check_owner(&mut *conn, batch).await?;
        self.finish_batch(conn, batch).await?;
        Ok(())
    }
}

/// Finishing checks that the batch is this consumer's: a batch held by another consumer is
/// refused (`ForeignBatch`) and stays open for its owner, whichever finish the source uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_by_another_consumer_is_never_finished() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "hijack").await;
    for name in ["a", "b"] {
        pgq_core::register_consumer(pool, &q, &c(name))
            .await
            .unwrap();
    }
    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;
    for own_finish in [false, true] {
        let source = Hijack {
            me: Subscription::new(q.clone(), c("a")),
            victim: Subscription::new(q.clone(), c("b")),
            own_finish,
        };
        let consumer = builder(pool, &q, "a").build_with_source(source).unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
        let id = batch.id();
        while batch.next_event().await.unwrap().is_some() {}
        let e = batch.finish().await.unwrap_err();
        assert_eq!(e.kind(), pgq_consumer::ErrorKind::ForeignBatch, "{e}");
        let victim = pgq_core::get_consumer_info(pool, &q, &c("b"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            victim.current_batch,
            Some(id),
            "b's batch is still open (own_finish: {own_finish})"
        );
    }
    // Its owner finishes it.
    let id = pgq_core::next_batch(pool, &q, &c("b"))
        .await
        .unwrap()
        .unwrap();
    pgq_core::finish_batch(pool, id).await.unwrap();
}
