//! Half-open connections (the network drops without a FIN) and a run loop whose future is
//! dropped instead of cancelled: nothing waits forever, nothing leaks.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_consumer::{Backoff, CoopConsumer, HandlerError, handler_fn};
use pgq_core::Event;
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use pgq_testkit::{Relay, TestDb};
use tokio_util::sync::CancellationToken;

use crate::common::{builder, c, produce, queue, tick, wait_for};

/// A pool on `url` whose sessions carry `application_name = app`.
async fn pool_on(url: &str, app: &str) -> PgPool {
    let opts = PgConnectOptions::from_str(url)
        .unwrap()
        .application_name(app);
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap()
}

async fn sessions(pool: &PgPool, app: &str) -> i64 {
    pgq_core::sqlx::query_scalar(
        "select count(*) from pg_stat_activity where application_name = $1",
    )
    .bind(app)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The run loop's connections freeze mid-use (a NAT losing its state: old flows black-holed, new
/// ones fine). Its statement gets no answer; after `database_timeout` the loop drops that
/// connection, takes a fresh one and goes on consuming; the tick listener does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_is_dropped_and_the_run_loop_goes_on() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "halfopen").await;
    let relay = Relay::start(db.cluster().port()).await.unwrap();
    let consumer_pool = pool_on(&relay.url(&db.url()), "halfopen_run").await;
    // Polling often: the loop keeps its connection between rounds, so the freeze catches a
    // statement on it.
    let consumer = builder(&consumer_pool, &q, "c")
        .poll_interval(Duration::from_millis(200))
        .database_timeout(Duration::from_secs(2))
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
            Ok::<_, HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;
    wait_for("the first events", || async {
        seen.lock().unwrap().len() == 3
    })
    .await;
    let listener_pid = || async {
        pgq_core::sqlx::query_scalar::<_, i32>(
            "select pid from pg_stat_activity \
             where application_name = 'halfopen_run' \
               and (query like 'LISTEN%' or query like '%pg_backend_pid()%') \
             order by backend_start desc limit 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap()
    };
    wait_for("the listener", || async { listener_pid().await.is_some() }).await;
    let first_listener = listener_pid().await.unwrap();

    relay.freeze_existing();
    let frozen = Instant::now();
    produce(pool, &q, 3, 6).await;
    tick(pool, &q).await;
    wait_for("events after the freeze", || async {
        seen.lock().unwrap().len() == 6
    })
    .await;
    eprintln!(
        "consuming again {:.1}s after the freeze",
        frozen.elapsed().as_secs_f64()
    );
    // The listener noticed too (its ping got no answer) and listens on a new connection (the
    // newest listener session is another one).
    wait_for("a new listener", || async {
        listener_pid().await.is_some_and(|p| p != first_listener)
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run loop stops on shutdown")
        .unwrap()
        .unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"]);
}

/// Dropping `run`'s future (an abort, a `select!`, a `timeout`) while a cooperative member
/// handles a batch: the tick listener and the heartbeat stop, their sessions end, the loop's
/// connection goes back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_leaks_no_session() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "dropped").await;
    let app = "dropped_run";
    let member_pool = pool_on(&db.url(), app).await;
    let member = CoopConsumer::coop_builder(member_pool.clone(), q.clone(), c("g"), c("m"))
        .dead_interval(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    member.register().await.unwrap();
    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let handler = handler_fn({
        let started = started.clone();
        move |_: Event| {
            let started = started.clone();
            async move {
                started.notify_one();
                // Stuck: the future is dropped while it waits here.
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let run = tokio::spawn({
        let member = member.clone();
        async move { member.run(handler, CancellationToken::new()).await }
    });
    tokio::time::timeout(Duration::from_secs(60), started.notified())
        .await
        .expect("the handler to be called");
    // The loop's connection, the listener's and the heartbeat's.
    wait_for("the listener's and the heartbeat's sessions", || async {
        sessions(pool, app).await >= 3
    })
    .await;

    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // Every pooled connection comes back (close waits for them all), and every session ends.
    tokio::time::timeout(Duration::from_secs(30), member_pool.close())
        .await
        .expect("every connection of the pool came back");
    wait_for("no session of the dropped run loop", || async {
        sessions(pool, app).await == 0
    })
    .await;
}
