//! Cooperative members (`CoopConsumer`): splitting a stream, exactly-once across the group,
//! takeover of a SIGKILLed member's batch, the heartbeat, leaving on shutdown, retries and dead
//! letters through the group, name checks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgq_consumer::{
    Backoff, ConsumerBuilder, CoopConsumer, CoopMember, Delivery, ErrorKind, EventContext, Handler,
    HandlerError, Shutdown, handler_fn,
};
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::PgPoolOptions;
use pgq_core::{Event, QueueName};
use pgq_testkit::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{
    c, count, exec, produce, q, queue, retry_step_and_tick, tick, ticker, wait_for,
};
use crate::crash::{CHILD_ENV, RecordThenHang, sigkill, spawn_test_child};

/// What handlers and callbacks record, shared with the test.
type Log<T> = Arc<Mutex<Vec<T>>>;

/// Member `m` of the group `g` on `queue`.
fn member(pool: &PgPool, queue: &QueueName, m: &str) -> ConsumerBuilder<CoopMember> {
    CoopConsumer::coop_builder(pool.clone(), queue.clone(), c("g"), c(m))
}

/// A pool of its own for one member, as if it ran in a process of its own.
async fn member_pool(db: &TestDb) -> PgPool {
    PgPoolOptions::new()
        .max_connections(3)
        .connect(&db.url())
        .await
        .unwrap()
}

async fn is_registered(pool: &PgPool, queue: &QueueName, consumer: &str) -> bool {
    pgq_core::get_consumer_info(pool, queue, &c(consumer))
        .await
        .unwrap()
        .is_some()
}

async fn held_batch(pool: &PgPool, queue: &QueueName, consumer: &str) -> Option<pgq_core::BatchId> {
    pgq_core::get_consumer_info(pool, queue, &c(consumer))
        .await
        .unwrap()
        .and_then(|i| i.current_batch)
}

/// Writes `(ev_id, member)` into `target`: in the batch's transaction when exactly-once, else
/// on its own. A short sleep per event makes the members overlap.
struct Writer {
    member: String,
    pool: PgPool,
}

impl Handler for Writer {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let insert = pgq_core::sqlx::query("insert into target (ev_id, member) values ($1, $2)")
            .bind(ev.ev_id)
            .bind(&self.member);
        match ctx.transaction() {
            Some(tx) => insert.execute(&mut *tx).await?,
            None => insert.execute(&self.pool).await?,
        };
        Ok(())
    }
}

/// Three members over 600 events in 30 ticks, woken by tick notifications only (the poll
/// interval is an hour). Returns the database for the caller's checks, after a clean shutdown.
async fn run_group(delivery: Delivery, target: &str) -> (TestDb, QueueName, Vec<i64>) {
    const N: u64 = 600;
    let db = TestDb::new().await;
    let pool = db.pool().clone();
    let q = queue(&pool, "coop_stream").await;
    exec(&pool, target).await;
    let dead: Log<i64> = Default::default();
    let shutdown = CancellationToken::new();
    let mut runs = Vec::new();
    for i in 0..3 {
        let name = format!("m{i}");
        let mpool = member_pool(&db).await;
        let dl = dead.clone();
        let consumer = member(&mpool, &q, &name)
            .delivery(delivery)
            .fetch_size(7)
            .max_retries(0)
            .dead_letter_callback(move |ev| {
                let dl = dl.clone();
                async move {
                    dl.lock().unwrap().push(ev.event.ev_id);
                    Ok(())
                }
            })
            .poll_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        // The group's position starts before the first event.
        consumer.register().await.unwrap();
        let handler = Writer {
            member: name,
            pool: mpool,
        };
        runs.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move { consumer.run(handler, shutdown).await }
        }));
    }
    for start in (0..N).step_by(20) {
        produce(&pool, &q, start, start + 20).await;
        tick(&pool, &q).await;
    }
    wait_for("every event in the target", || async {
        count(&pool, "select count(distinct ev_id) from target").await == N as i64
    })
    .await;
    shutdown.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let dead = dead.lock().unwrap().clone();
    (db, q, dead)
}

async fn check_group_after_run(pool: &PgPool, q: &QueueName) {
    assert!(
        count(pool, "select count(distinct member) from target").await >= 2,
        "the members split the batches"
    );
    for m in ["g.m0", "g.m1", "g.m2"] {
        assert!(!is_registered(pool, q, m).await, "{m} left on shutdown");
    }
    let group = pgq_core::get_consumer_info(pool, q, &c("g"))
        .await
        .unwrap()
        .expect("the group stays registered");
    assert_eq!(group.current_batch, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_a_stream_and_exactly_once_writes_each_event_once() {
    let (db, q, dead) = run_group(
        Delivery::ExactlyOnce,
        "create table target (ev_id bigint primary key, member text not null)",
    )
    .await;
    let pool = db.pool();
    // A second write of an event would break the key, fail the handler and dead-letter it.
    assert_eq!(dead, Vec::<i64>::new(), "no event was written twice");
    assert_eq!(count(pool, "select count(*) from target").await, 600);
    check_group_after_run(pool, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_a_stream_and_at_least_once_loses_nothing() {
    let (db, q, dead) = run_group(
        Delivery::AtLeastOnce,
        "create table target (ev_id bigint not null, member text not null)",
    )
    .await;
    let pool = db.pool();
    assert_eq!(dead, Vec::<i64>::new());
    assert!(count(pool, "select count(*) from target").await >= 600);
    check_group_after_run(pool, &q).await;
}

/// A member process (re-run of this binary, see `crash::spawn_test_child`): member `a` of group
/// `g` records each event in `handled` and hangs after 10, holding its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_member() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return; // only a member process when re-run by the tests below
    };
    assert_eq!(mode, "coop_hang", "unknown child mode");
    let pool = PgPool::connect(&std::env::var("PGQ_CHILD_URL").unwrap())
        .await
        .unwrap();
    let queue = q(&std::env::var("PGQ_CHILD_QUEUE").unwrap());
    let consumer = member(&pool, &queue, "a").fetch_size(5).build().unwrap();
    consumer
        .run(RecordThenHang(pool), CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_member_s_batch_is_taken_over_under_a_fresh_id_and_nothing_is_lost() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_crash").await;
    exec(pool, "create table handled (ev_id bigint)").await;
    let b = member(pool, &q, "b")
        .dead_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    b.register().await.unwrap();
    produce(pool, &q, 0, 100).await;
    tick(pool, &q).await;

    let child = spawn_test_child("coop::child_member", "coop_hang", &db.url(), &q);
    wait_for("the child member to handle 10 events", || async {
        count(pool, "select count(*) from handled").await >= 10
    })
    .await;
    let old = held_batch(pool, &q, "g.a")
        .await
        .expect("the child member holds a batch");
    sigkill(child);

    // Once the child has been silent for the dead interval, b takes its batch over.
    wait_for_takeover(pool, &b).await;
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = b.next_batch(&mut conn).await.unwrap().unwrap();
    assert_ne!(batch.id(), old, "a takeover hands out a fresh batch id");
    assert_eq!(
        held_batch(pool, &q, "g.a").await,
        None,
        "the dead member lost it"
    );

    // The dead member's id stops working: its late finish and reopening are refused.
    let stale = pgq_core::coop_finish_batch(pool, old).await.unwrap_err();
    assert_eq!(stale.kind(), pgq_core::ErrorKind::BatchNotFound);
    let a = member(pool, &q, "a").build().unwrap();
    let mut other = pool.acquire().await.unwrap();
    let err = a.open_batch(&mut other, old).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::BatchNotFound)
    );
    // Nor may a member open the batch its peer holds now.
    let err = a.open_batch(&mut other, batch.id()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForeignBatch);

    // Nothing lost: the new owner gets every event, those the child had handled included.
    let events: Vec<Event> = batch.events().try_collect().await.unwrap();
    let got: BTreeSet<String> = events.iter().filter_map(|e| e.ev_data.clone()).collect();
    assert_eq!(got, (0..100).map(|i| i.to_string()).collect());
    assert_eq!(events.len(), 100);
    batch.finish().await.unwrap();
    assert!(b.next_batch(&mut conn).await.unwrap().is_none());
    assert_eq!(held_batch(pool, &q, "g.b").await, None);
}

/// b takes over a's batch once a has been silent for the dead interval.
async fn wait_for_takeover(pool: &PgPool, b: &CoopConsumer) {
    wait_for("b to take the silent member's batch over", || async {
        let mut conn = pool.acquire().await.unwrap();
        match b.next_batch(&mut conn).await.unwrap() {
            Some(batch) => {
                batch.abandon().await.unwrap();
                true
            }
            None => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_finish_after_a_takeover_is_refused_and_its_writes_roll_back() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_late").await;
    exec(pool, "create table target (ev_id bigint primary key)").await;
    let a = member(pool, &q, "a").build().unwrap();
    let b = member(pool, &q, "b")
        .dead_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    a.register().await.unwrap();
    b.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    tick(pool, &q).await;

    // a reads its batch and writes in the batch's transaction, then stalls (no heartbeat: it
    // drives the batch by hand and never touches).
    let mut conn_a = pool.acquire().await.unwrap();
    let mut batch = a.next_batch(&mut conn_a).await.unwrap().unwrap();
    let old = batch.id();
    let events: Vec<Event> = batch.events().try_collect().await.unwrap();
    for ev in &events {
        pgq_core::sqlx::query("insert into target values ($1)")
            .bind(ev.ev_id)
            .execute(batch.conn())
            .await
            .unwrap();
    }
    wait_for_takeover(pool, &b).await;

    let err = batch.finish().await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::BatchNotFound)
    );
    assert_eq!(
        count_on(&mut conn_a, "select count(*) from target").await,
        0,
        "the stale owner's writes rolled back"
    );
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = b.next_batch(&mut conn).await.unwrap().unwrap();
    assert_ne!(batch.id(), old);
    let again: Vec<Event> = batch.events().try_collect().await.unwrap();
    assert_eq!(again.len(), 5, "the new owner gets every event");
    batch.finish().await.unwrap();
}

async fn count_on(conn: &mut pgq_core::sqlx::PgConnection, sql: &'static str) -> i64 {
    pgq_core::sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_a_slow_handler_s_batch_from_being_taken_over() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_slow").await;
    // A heartbeat far more often than the dead interval: a live member that a loaded machine
    // delays by a few seconds must still not look dead.
    let dead = Duration::from_secs(4);
    let a = member(&member_pool(&db).await, &q, "a")
        .dead_interval(dead)
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let b = member(pool, &q, "b").dead_interval(dead).build().unwrap();
    a.register().await.unwrap();
    b.register().await.unwrap();
    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;

    // Each event takes half the dead interval: the batch takes one and a half times that.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let seen = handled.clone();
    let handler = handler_fn(move |ev: Event| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(dead / 2).await;
            seen.lock().unwrap().push(ev.ev_id);
            Ok::<_, HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (a, shutdown) = (a.clone(), shutdown.clone());
        async move { a.run(handler, shutdown).await }
    });
    wait_for("a to take the batch", || async {
        held_batch(pool, &q, "g.a").await.is_some()
    })
    .await;
    let taken = held_batch(pool, &q, "g.a").await.unwrap();
    // While a handles its batch, b keeps asking for batches with the same dead interval.
    let mut conn = pool.acquire().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a to finish"
        );
        if let Some(batch) = b.next_batch(&mut conn).await.unwrap() {
            panic!("b took over batch {} from a live member", batch.id());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("a to finish its batch", || async {
        held_batch(pool, &q, "g.a").await.is_none()
    })
    .await;
    assert!(b.next_batch(&mut conn).await.unwrap().is_none());
    assert_eq!(
        handled.lock().unwrap().len(),
        3,
        "a handled the whole batch once"
    );
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let e = pgq_core::coop_finish_batch(pool, taken).await.unwrap_err();
    assert_eq!(
        e.kind(),
        pgq_core::ErrorKind::BatchNotFound,
        "a finished its batch itself: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_unregisters_the_member_and_keeps_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_leave").await;
    let leaving = member(&member_pool(&db).await, &q, "leaving")
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let staying = member(&member_pool(&db).await, &q, "staying")
        .unregister_on_shutdown(false)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    leaving.register().await.unwrap();
    staying.register().await.unwrap();
    produce(pool, &q, 0, 10).await;
    tick(pool, &q).await;
    produce(pool, &q, 10, 20).await;
    tick(pool, &q).await;

    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let shutdown = CancellationToken::new();
    let mut runs = Vec::new();
    for m in [leaving, staying] {
        let seen = handled.clone();
        let handler = handler_fn(move |ev: Event| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().insert(ev.ev_id);
                Ok::<_, HandlerError>(())
            }
        });
        let shutdown = shutdown.clone();
        runs.push(tokio::spawn(async move { m.run(handler, shutdown).await }));
    }
    wait_for("both batches handled", || async {
        handled.lock().unwrap().len() == 20
    })
    .await;
    wait_for("the group to be idle", || async {
        held_batch(pool, &q, "g.leaving").await.is_none()
            && held_batch(pool, &q, "g.staying").await.is_none()
    })
    .await;
    shutdown.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    assert!(
        !is_registered(pool, &q, "g.leaving").await,
        "the member left"
    );
    assert!(
        is_registered(pool, &q, "g.staying").await,
        "unregister_on_shutdown(false) keeps the member"
    );
    let group = pgq_core::get_consumer_info(pool, &q, &c("g"))
        .await
        .unwrap()
        .expect("the group keeps its position");
    assert_eq!(group.pending_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_abandoning_its_batch_on_shutdown_returns_it_to_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_abandon").await;
    let a = member(&member_pool(&db).await, &q, "a")
        .shutdown(Shutdown::Abandon)
        .build()
        .unwrap();
    a.register().await.unwrap();
    produce(pool, &q, 0, 10).await;
    tick(pool, &q).await;

    // The first event asks for shutdown: the rest of the batch is abandoned.
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handler = handler_fn(move |_ev: Event| {
        let stop = stop.clone();
        async move {
            stop.cancel();
            Ok::<_, HandlerError>(())
        }
    });
    a.run(handler, shutdown).await.unwrap();
    assert!(!is_registered(pool, &q, "g.a").await, "the member left");

    // Its batch's events come back to the group through the retry queue.
    let b = member(pool, &q, "b").build().unwrap();
    b.register().await.unwrap();
    retry_step_and_tick(pool, &q).await;
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = b.next_batch(&mut conn).await.unwrap().unwrap();
    let events: Vec<Event> = batch.events().try_collect().await.unwrap();
    let data: BTreeSet<String> = events.iter().filter_map(|e| e.ev_data.clone()).collect();
    assert_eq!(data, (0..10).map(|i| i.to_string()).collect());
    assert!(events.iter().all(|e| e.ev_retry == Some(1)));
    batch.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_are_retried_through_the_group_and_dead_lettered() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "coop_retry").await;
    let dead: Log<(String, i32, String)> = Default::default();
    let attempts: Log<(String, Option<i32>)> = Default::default();
    let shutdown = CancellationToken::new();
    let mut runs = Vec::new();
    for m in ["m0", "m1"] {
        let dl = dead.clone();
        let consumer = member(&member_pool(&db).await, &q, m)
            .max_retries(2)
            .retry_backoff(Backoff::constant(Duration::ZERO))
            .poll_interval(Duration::from_millis(50))
            .dead_letter_callback(move |ev| {
                let dl = dl.clone();
                async move {
                    let data = ev.event.ev_data.clone().unwrap_or_default();
                    dl.lock().unwrap().push((data, ev.retries, ev.consumer));
                    Ok(())
                }
            })
            .build()
            .unwrap();
        consumer.register().await.unwrap();
        let seen = attempts.clone();
        let handler = handler_fn(move |ev: Event| {
            let seen = seen.clone();
            async move {
                let data = ev.ev_data.clone().unwrap_or_default();
                seen.lock().unwrap().push((data.clone(), ev.ev_retry));
                if data == "3" {
                    return Err(HandlerError::new(std::io::Error::other("cannot handle 3")));
                }
                Ok(())
            }
        });
        let shutdown = shutdown.clone();
        runs.push(tokio::spawn(async move {
            consumer.run(handler, shutdown).await
        }));
    }
    produce(pool, &q, 0, 10).await;
    let ticking = ticker(pool, &q);
    wait_for("the failing event to be dead-lettered", || async {
        !dead.lock().unwrap().is_empty()
    })
    .await;
    ticking.cancel();
    shutdown.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0.as_str(), dead[0].1), ("3", 2));
    assert!(
        dead[0].2.starts_with("g.m"),
        "a member gave up: {}",
        dead[0].2
    );
    let attempts = attempts.lock().unwrap().clone();
    let of_3: Vec<Option<i32>> = attempts
        .iter()
        .filter(|(d, _)| d == "3")
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(
        of_3,
        vec![None, Some(1), Some(2)],
        "handled, then retried twice"
    );
    let others: BTreeSet<&str> = attempts
        .iter()
        .map(|(d, _)| d.as_str())
        .filter(|d| *d != "3")
        .collect();
    assert_eq!(others.len(), 9, "every other event handled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_a_dot_and_bad_intervals_are_refused_at_build_time() {
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://unused@127.0.0.1:1/none")
        .unwrap();
    let qn = q("orders");
    let build = |group: &str, m: &str| {
        CoopConsumer::coop_builder(pool.clone(), qn.clone(), c(group), c(m)).build()
    };
    for (group, m) in [("a.b", "m"), ("g", "m.1"), (".", "m")] {
        let err = build(group, m).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Core(pgq_core::ErrorKind::InvalidName),
            "{group}.{m}"
        );
        assert!(err.to_string().contains("'.'"), "{err}");
    }
    let long = "x".repeat(64);
    assert_eq!(
        build(&long, &long).unwrap_err().kind(),
        ErrorKind::Core(pgq_core::ErrorKind::InvalidName),
        "group.member must fit a consumer name"
    );
    let ok = build("g", "m").unwrap();
    assert_eq!(ok.name().as_str(), "g.m");
    assert_eq!((ok.group().as_str(), ok.member().as_str()), ("g", "m"));
    let err = member(&pool, &qn, "m")
        .dead_interval(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_secs(3))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let e = CoopMember::new(qn.clone(), c("g.x"), c("m")).unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::InvalidName, "{e}");
}
