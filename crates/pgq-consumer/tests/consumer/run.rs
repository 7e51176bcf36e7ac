//! The run loop: retries and dead letters, exactly-once rollback, wakeups, reconnects, shutdown.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use pgq_consumer::{
    Backoff, Consumer, DeadLetter, DeadLetterEvent, DeadLetterMeta, Delivery, EventContext,
    Handler, HandlerError, handler_fn,
};
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use pgq_core::{Event, QueueName};
use pgq_testkit::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{builder, c, count, exec, produce, queue, tick, ticker, wait_for};

#[derive(Debug)]
struct Boom(String);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// A pool whose connections carry `application_name`, so a test can find and kill them.
async fn named_pool(db: &TestDb, app: &str) -> PgPool {
    let opts = PgConnectOptions::from_str(&db.url())
        .unwrap()
        .application_name(app);
    PgPoolOptions::new()
        .max_connections(3)
        .connect_with(opts)
        .await
        .unwrap()
}

async fn drain_queue(pool: &PgPool, q: &QueueName, reader: &str) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(b) = pgq_core::next_batch(pool, q, &c(reader)).await.unwrap() {
        all.extend(pgq_core::get_batch_events(pool, b).await.unwrap());
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    all
}

/// Queue `name` and its dead-letter queue `<name>_dlq`, read by consumer `dlq_reader`.
async fn queue_with_dlq(pool: &PgPool, name: &str) -> (QueueName, QueueName) {
    let q = queue(pool, name).await;
    let dlq = crate::common::q(&format!("{name}_dlq"));
    pgq_core::create_queue(pool, &dlq).await.unwrap();
    pgq_core::register_consumer(pool, &dlq, &c("dlq_reader"))
        .await
        .unwrap();
    (q, dlq)
}

/// Tick the dead-letter queue and add what `dlq_reader` finds there to `dead`; how many there are.
async fn collect_dead(pool: &PgPool, dlq: &QueueName, dead: &Mutex<Vec<Event>>) -> usize {
    tick(pool, dlq).await;
    let got = drain_queue(pool, dlq, "dlq_reader").await;
    let mut dead = dead.lock().unwrap();
    dead.extend(got);
    dead.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_dead_letter_queue_after_max_retries_with_their_reason() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, dlq) = queue_with_dlq(pool, "orders").await;
    let consumer = builder(pool, &q, "c")
        .dead_letter(DeadLetter::Queue(dlq.clone()))
        .max_retries(2)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let attempts: Arc<Mutex<HashMap<String, Vec<Option<i32>>>>> = Default::default();
    let seen = attempts.clone();
    let handler = handler_fn(move |ev: Event| {
        let seen = seen.clone();
        async move {
            let data = ev.ev_data.clone().unwrap();
            seen.lock()
                .unwrap()
                .entry(data.clone())
                .or_default()
                .push(ev.ev_retry);
            if data == "1" {
                return Err(Boom(format!("event {data}")).into());
            }
            Ok(())
        }
    });
    produce(pool, &q, 0, 3).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    let dead: Arc<Mutex<Vec<Event>>> = Default::default();
    wait_for("a dead letter", || {
        let (pool, dlq, dead) = (pool.clone(), dlq.clone(), dead.clone());
        async move { collect_dead(&pool, &dlq, &dead).await > 0 }
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts["0"], [None], "good events are handled once");
    assert_eq!(attempts["2"], [None]);
    assert_eq!(
        attempts["1"],
        [None, Some(1), Some(2)],
        "first delivery, then max_retries retries"
    );
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    let dl = &dead[0];
    assert_eq!(dl.ev_data.as_deref(), Some("1"));
    assert_eq!(dl.ev_type.as_deref(), Some("t"));
    let meta = DeadLetterMeta::from_event(dl).expect("metadata in extra4");
    assert_eq!(meta.reason, "boom: event 1");
    assert_eq!(meta.retries, 2);
    assert_eq!(meta.queue, "orders");
    assert_eq!(meta.consumer, "c");
}

/// At-least-once batches are streamed and their dead letters held until the batch's end; with
/// more of them than `fetch_size` the batch is read again in chunks: every event still reaches
/// the dead-letter queue exactly once, mixed retries included, and the good ones are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_more_dead_letters_than_fetch_size_is_dead_lettered_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, dlq) = queue_with_dlq(pool, "many_dead").await;
    let consumer = builder(pool, &q, "c")
        .dead_letter(DeadLetter::Queue(dlq.clone()))
        .fetch_size(3)
        .max_retries(1)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    // (data, ev_retry) of every event handled.
    type Handled = Arc<Mutex<Vec<(String, Option<i32>)>>>;
    let handled: Handled = Default::default();
    let seen = handled.clone();
    // Multiples of 3 succeed, 1 mod 3 dead-letter at once, 2 mod 3 fail (one retry, then dead).
    let handler = handler_fn(move |ev: Event| {
        let seen = seen.clone();
        async move {
            let data = ev.ev_data.clone().unwrap();
            seen.lock().unwrap().push((data.clone(), ev.ev_retry));
            match data.parse::<u32>().unwrap() % 3 {
                0 => Ok(()),
                1 => Err(HandlerError::dead_letter(Boom(data))),
                _ => Err(Boom(data).into()),
            }
        }
    });
    produce(pool, &q, 0, 30).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    let dead: Arc<Mutex<Vec<Event>>> = Default::default();
    wait_for("20 dead letters", || {
        let (pool, dlq, dead) = (pool.clone(), dlq.clone(), dead.clone());
        async move { collect_dead(&pool, &dlq, &dead).await >= 20 }
    })
    .await;
    // Nothing more arrives later: with the stand-in ticker stopped, retries are moved and
    // ticked by hand until none is left and the consumer has finished the newest tick, so
    // every event has had its last handling (a second dead letter would show below).
    stop_ticker.cancel();
    wait_for("the consumer to finish every batch and retry", || async {
        if count(pool, "select count(*) from pgq.retry_queue").await > 0 {
            crate::common::retry_step_and_tick(pool, &q).await;
            return false;
        }
        let info = pgq_core::get_consumer_info(pool, &q, &c("c"))
            .await
            .unwrap()
            .expect("registered");
        let newest = pgq_core::get_queue_info(pool, &q)
            .await
            .unwrap()
            .last_tick_id;
        info.current_batch.is_none() && info.last_tick == newest
    })
    .await;
    collect_dead(pool, &dlq, &dead).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let mut dead: Vec<u32> = dead
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.ev_data.as_deref().unwrap().parse().unwrap())
        .collect();
    dead.sort_unstable();
    let expected: Vec<u32> = (0..30).filter(|i| i % 3 != 0).collect();
    assert_eq!(
        dead, expected,
        "every failing event dead-lettered exactly once"
    );
    let handled = handled.lock().unwrap().clone();
    for i in (0..30).filter(|i| i % 3 == 0) {
        assert!(
            handled.iter().any(|(d, _)| *d == i.to_string()),
            "good event {i} handled"
        );
    }
    // The retried ones came back with ev_retry 1 (their retry batch has more dead letters than
    // fetch_size too, so its first events are handled twice: at-least-once).
    for i in (0..30).filter(|i| i % 3 == 2) {
        assert!(
            handled
                .iter()
                .any(|(d, r)| *d == i.to_string() && *r == Some(1)),
            "event {i} retried"
        );
    }
}

/// A streamed batch whose statement outlives the server's `statement_timeout` (a slow handler
/// keeps it open) is read again in chunks: every event is handled and the batch finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_under_statement_timeout_still_finishes_the_batch() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "slow").await;
    pgq_core::register_consumer(pool, &q, &c("c"))
        .await
        .unwrap();
    // 8 KiB payloads: the result outgrows the sockets' buffers, so the server is still sending
    // when the timeout strikes.
    let events: Vec<pgq_core::NewEvent> = (0..2000)
        .map(|i| pgq_core::NewEvent::new("t", format!("{i:0>8192}")))
        .collect();
    pgq_core::insert_events(pool, &q, &events).await.unwrap();
    tick(pool, &q).await;
    let opts = PgConnectOptions::from_str(&db.url())
        .unwrap()
        .options([("statement_timeout", "400")]);
    let limited = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(opts)
        .await
        .unwrap();
    let consumer = builder(&limited, &q, "c")
        .fetch_size(100)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let seen: Arc<Mutex<Vec<u32>>> = Default::default();
    let handler = handler_fn({
        let seen = seen.clone();
        move |ev: Event| {
            let seen = seen.clone();
            async move {
                let i: u32 = ev.ev_data.as_deref().unwrap().parse().unwrap();
                seen.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    wait_for("the batch finished", || {
        let pool = pool.clone();
        let q = q.clone();
        async move {
            let info = pgq_core::get_consumer_info(&pool, &q, &c("c"))
                .await
                .unwrap()
                .unwrap();
            info.current_batch.is_none() && info.last_tick.map(|t| t.get()) > Some(1)
        }
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let mut seen = seen.lock().unwrap().clone();
    let handled = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert!(
        seen == (0..2000).collect::<Vec<u32>>(),
        "every event handled: {} distinct of 2000",
        seen.len()
    );
    assert!(
        handled > 2000,
        "the streamed read was cut by statement_timeout and the batch read again ({handled} calls)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_callback_gets_events_that_cannot_succeed() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "cb").await;
    let dead: Arc<Mutex<Vec<DeadLetterEvent>>> = Default::default();
    let sink = dead.clone();
    let consumer = builder(pool, &q, "c")
        .dead_letter_callback(move |ev| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(ev);
                Ok(())
            }
        })
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 2).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let handler = handler_fn(|ev: Event| async move {
        if ev.ev_data.as_deref() == Some("0") {
            return Err(HandlerError::dead_letter(Boom("malformed".into())));
        }
        Ok(())
    });
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    wait_for("the dead letter", || {
        let n = dead.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.ev_data.as_deref(), Some("0"));
    assert_eq!(dead[0].retries, 0, "dead-lettered without retrying");
    assert_eq!(dead[0].reason, "boom: malformed");
}

/// Exactly-once: writes in the batch's transaction; `fail_on` makes the handler fail after
/// writing.
struct WriteTarget {
    fail_on: &'static str,
}

impl Handler for WriteTarget {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let tx = ctx
            .transaction()
            .expect("exactly-once gives the transaction");
        pgq_core::sqlx::query("insert into target (ev_id, data) values ($1, $2)")
            .bind(ev.ev_id)
            .bind(&ev.ev_data)
            .execute(&mut *tx)
            .await?;
        if ev.ev_data.as_deref() == Some(self.fail_on) {
            return Err(HandlerError::dead_letter(Boom("after writing".into())));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_rolls_back_a_failed_handlers_writes() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(pool, "create table target (ev_id bigint, data text)").await;
    let q = queue(pool, "eo").await;
    let consumer = builder(pool, &q, "c")
        .delivery(Delivery::ExactlyOnce)
        .fetch_size(4)
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 10).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(WriteTarget { fail_on: "5" }, shutdown).await }
    });
    let dead_letters = || async {
        count(
            pool,
            "select count(*) from pgq_rs.dead_letter where dl_queue = 'eo' and ev_data = '5'",
        )
        .await
    };
    wait_for("the batch to be consumed", || async {
        count(pool, "select count(*) from target").await >= 9 && dead_letters().await > 0
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();
    assert_eq!(count(pool, "select count(*) from target").await, 9);
    assert_eq!(
        count(pool, "select count(distinct ev_id) from target").await,
        9
    );
    assert_eq!(
        count(pool, "select count(*) from target where data = '5'").await,
        0,
        "the failed handler's write was rolled back"
    );
    assert_eq!(dead_letters().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_continues_after_the_listener_and_batch_connections_are_killed() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "wake").await;
    let consumer_pool = named_pool(&db, "consumer_under_test").await;
    // Polling once an hour: only tick notifications can wake this consumer.
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
    let listener_pid = || async {
        pgq_core::sqlx::query_scalar::<_, i32>(
            "select pid from pg_stat_activity \
             where application_name = 'consumer_under_test' and query like 'LISTEN%'",
        )
        .fetch_optional(pool)
        .await
        .unwrap()
    };
    wait_for("the listener", || async { listener_pid().await.is_some() }).await;
    let first_pid = listener_pid().await.unwrap();
    let seen_len = || seen.lock().unwrap().len();

    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;
    wait_for("events woken by a tick notification", || async {
        seen_len() == 3
    })
    .await;

    // Kill every connection of the consumer: the listener and the pooled batch connection.
    exec(
        pool,
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where application_name = 'consumer_under_test'",
    )
    .await;
    wait_for("a new listener", || async {
        listener_pid().await.is_some_and(|p| p != first_pid)
    })
    .await;
    produce(pool, &q, 3, 6).await;
    tick(pool, &q).await;
    wait_for("events after the reconnect", || async { seen_len() == 6 }).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn the_tick_trigger_notifies_whoever_ticks() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "notified").await;
    let other = queue(pool, "other").await;
    assert!(pgq_core::tick_trigger_installed(pool).await.unwrap());
    // A pgqd-like ticker: a pgq_admin role calling pgq.ticker().
    let role = db.create_role("admin", "pgq_admin", None).await;
    let admin = db.pool_as(&role).await;
    let mut listener = pgq_core::tick_listener(pool).await.unwrap();
    produce(pool, &other, 0, 1).await;
    pgq_core::force_tick(pool, &other).await.unwrap();
    produce(pool, &q, 0, 1).await;
    pgq_core::force_tick(pool, &q).await.unwrap();
    assert_eq!(
        pgq_core::ticker(&admin).await.unwrap(),
        2,
        "both queues ticked"
    );
    let mut payloads = Vec::new();
    while payloads.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("a notification")
            .unwrap();
        assert_eq!(n.channel(), pgq_core::TICK_CHANNEL);
        payloads.push(n.payload().to_owned());
    }
    payloads.sort();
    assert_eq!(payloads, ["notified", "other"]);
}

#[tokio::test]
async fn a_disabled_tick_trigger_counts_as_missing_and_notify_tick_stands_in() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "by_hand").await;
    let toggle = |on: bool| {
        let sql = if on {
            "alter table pgq.tick enable trigger pgq_rs_tick_notify"
        } else {
            "alter table pgq.tick disable trigger pgq_rs_tick_notify"
        };
        pgq_core::sqlx::query(sql).execute(pool)
    };
    toggle(false).await.unwrap();
    // Disabled, it wakes nobody: as the ticker sees it, so does the consumer.
    assert!(!pgq_core::tick_trigger_installed(pool).await.unwrap());
    let mut listener = pgq_core::tick_listener(pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    pgq_core::notify_tick(&mut *tx, &q).await.unwrap();
    tx.commit().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert!(pgq_core::is_tick_of(&n, &q), "{n:?}");
    toggle(true).await.unwrap();
    assert!(pgq_core::tick_trigger_installed(pool).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_and_repeats_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "load").await;
    let consumer = builder(pool, &q, "c")
        .fetch_size(7)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Default::default();
    let handler = {
        let sink = seen.clone();
        handler_fn(move |ev: Event| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(ev.ev_id);
                tokio::task::yield_now().await;
                Ok(())
            }
        })
    };
    // Producers and the ticker keep going while the consumer shuts down.
    let stop_load = CancellationToken::new();
    let producer = tokio::spawn({
        let (pool, q, stop) = (pool.clone(), q.clone(), stop_load.clone());
        async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                produce(&pool, &q, n, n + 25).await;
                n += 25;
            }
            n
        }
    });
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler.clone(), shutdown).await }
    });
    wait_for("some load", || async { seen.lock().unwrap().len() > 500 }).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    // Never half-finished: the consumer has no batch open.
    let info = pgq_core::get_consumer_info(pool, &q, &c("c"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.current_batch, None);

    stop_load.cancel();
    let produced = producer.await.unwrap();
    stop_ticker.cancel();
    tick(pool, &q).await;
    // A restarted consumer sees exactly the rest.
    let mut conn = pool.acquire().await.unwrap();
    while let Some(mut batch) = consumer.next_batch(&mut conn).await.unwrap() {
        let evs: Vec<_> = batch.events().try_collect().await.unwrap();
        seen.lock().unwrap().extend(evs.iter().map(|e| e.ev_id));
        batch.finish().await.unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "no event delivered twice");
    assert_eq!(seen.len() as u64, produced, "no event lost");
}

#[tokio::test]
async fn the_builder_refuses_bad_configuration() {
    // Builder checks that need no database.
    let db = TestDb::new().await;
    let q = crate::common::q("x");
    let e = Consumer::builder(db.pool().clone(), q.clone(), c("c"))
        .fetch_size(0)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), pgq_consumer::ErrorKind::Config);
    let e = Consumer::builder(db.pool().clone(), q.clone(), c("c"))
        .dead_letter(pgq_consumer::DeadLetter::Queue(q))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), pgq_consumer::ErrorKind::Config);
}
