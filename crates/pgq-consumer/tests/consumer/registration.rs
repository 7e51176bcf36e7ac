//! Registration under concurrency, unregistering a cooperative member that holds a batch, the
//! refusal of a `pgq_coop` that is not ours, and the heartbeat that stops when the handler hangs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgq_consumer::{
    BatchSource, Consumer, CoopConsumer, ErrorKind, HandlerError, Registration, handler_fn,
};
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::PgPoolOptions;
use pgq_core::{Event, QueueName, TickId};
use pgq_testkit::TestDb;
use tokio::sync::{Barrier, Notify};
use tokio_util::sync::CancellationToken;

use crate::common::{c, exec, produce, queue, retry_step_and_tick, tick, wait_for};

const EVENTS: u64 = 40;

/// A queue with a tick t0 and then [`EVENTS`] events over four ticks; returns t0.
async fn queue_with_events(pool: &PgPool, name: &str) -> (QueueName, TickId) {
    let q = queue(pool, name).await;
    tick(pool, &q).await;
    let t0 = pgq_core::get_queue_info(pool, &q)
        .await
        .unwrap()
        .last_tick_id
        .unwrap();
    for i in 0..4 {
        produce(pool, &q, i * EVENTS / 4, (i + 1) * EVENTS / 4).await;
        tick(pool, &q).await;
    }
    (q, t0)
}

/// Read and finish every batch there is; count each event seen into `seen`.
async fn drain<S: BatchSource>(consumer: &Consumer<S>, seen: &mut BTreeMap<i64, u32>) {
    let mut conn = consumer.pool().acquire().await.unwrap();
    while let Some(mut batch) = consumer.next_batch(&mut conn).await.unwrap() {
        let events: Vec<Event> = batch.events().try_collect().await.unwrap();
        for ev in events {
            *seen.entry(ev.ev_id).or_default() += 1;
        }
        batch.finish().await.unwrap();
    }
}

fn assert_each_once(seen: &BTreeMap<i64, u32>, what: &str) {
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: events delivered again (the consumer was rewound): {twice:?}"
    );
    assert_eq!(seen.len() as u64, EVENTS, "{what}: every event once");
}

/// Many processes registering one consumer at a tick at the same moment, while the first one
/// to get through already consumes: it is registered once, no registration fails, and it is
/// never moved back to the tick (no event comes twice). A check-then-register in the consumer
/// let a late registration run `pgq.register_consumer_at` on the registered consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_registrations_register_once_and_never_rewind() {
    const REGISTRANTS: usize = 12;
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, t0) = queue_with_events(pool, "reg_race").await;
    let wide = PgPoolOptions::new()
        .max_connections(REGISTRANTS as u32 + 4)
        .connect(&db.url())
        .await
        .unwrap();
    for round in 0..4 {
        let name = format!("c{round}");
        let build = || {
            Consumer::builder(wide.clone(), q.clone(), c(&name))
                .registration(Registration::AtTick(t0))
                .build()
                .unwrap()
        };
        let barrier = Arc::new(Barrier::new(REGISTRANTS + 1));
        let mut tasks = Vec::new();
        for _ in 0..REGISTRANTS {
            let (consumer, barrier) = (build(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                consumer.register().await
            }));
        }
        let runner = build();
        barrier.wait().await;
        let mut newly = usize::from(runner.register().await.unwrap());
        let mut seen = BTreeMap::new();
        drain(&runner, &mut seen).await;
        for t in tasks {
            match t.await.unwrap() {
                Ok(n) => newly += usize::from(n),
                Err(e) => panic!("round {round}: a simultaneous registration failed: {e}"),
            }
        }
        assert_eq!(newly, 1, "round {round}: registered exactly once");
        // Whatever a late registration did, it is done now: nothing may come again.
        drain(&runner, &mut seen).await;
        assert_each_once(&seen, &format!("round {round}"));
    }
}

/// The same for the members of a cooperative group creating their group at a tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_creating_their_group_at_once_register_it_once_and_never_rewind() {
    const MEMBERS: usize = 10;
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, t0) = queue_with_events(pool, "reg_group").await;
    let wide = PgPoolOptions::new()
        .max_connections(MEMBERS as u32 + 4)
        .connect(&db.url())
        .await
        .unwrap();
    for round in 0..3 {
        let group = format!("g{round}");
        let build = |m: usize| {
            CoopConsumer::coop_builder(wide.clone(), q.clone(), c(&group), c(&format!("m{m}")))
                .registration(Registration::AtTick(t0))
                .build()
                .unwrap()
        };
        let barrier = Arc::new(Barrier::new(MEMBERS));
        let mut tasks = Vec::new();
        for m in 1..MEMBERS {
            let (member, barrier) = (build(m), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                member.register().await
            }));
        }
        let runner = build(0);
        barrier.wait().await;
        assert!(runner.register().await.unwrap(), "m0 is new");
        let mut seen = BTreeMap::new();
        drain(&runner, &mut seen).await;
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: a member's registration failed: {e}");
            }
        }
        drain(&runner, &mut seen).await;
        assert_each_once(&seen, &format!("round {round}"));
    }
}

/// `Consumer::unregister` of a plain consumer named `group.member` — what `pgq consumer
/// unregister Q group.member` does through pgq_core::unregister_consumer — on a member holding
/// a batch: the events go back to the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_a_member_by_its_full_name_returns_its_batch_to_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "unreg_full").await;
    let member = |m: &str| {
        CoopConsumer::coop_builder(pool.clone(), q.clone(), c("g"), c(m))
            .build()
            .unwrap()
    };
    let (a, b) = (member("a"), member("b"));
    a.register().await.unwrap();
    b.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    tick(pool, &q).await;
    {
        let mut conn = pool.acquire().await.unwrap();
        let batch = a.next_batch(&mut conn).await.unwrap().unwrap();
        batch.abandon().await.unwrap();
    }
    // The member, as a plain consumer by its pgq name.
    let plain = Consumer::builder(pool.clone(), q.clone(), c("g.a"))
        .registration(Registration::Existing)
        .build()
        .unwrap();
    plain.unregister().await.unwrap();
    retry_step_and_tick(pool, &q).await;
    let mut seen = BTreeMap::new();
    drain(&b, &mut seen).await;
    assert_eq!(seen.len(), 5, "the group got a's events back: {seen:?}");
}

/// Replace our pgq_coop with a foreign one: same function names, other semantics.
async fn foreign_pgq_coop(pool: &PgPool) {
    exec(
        pool,
        "drop schema pgq_coop cascade;
         create schema pgq_coop;
         create function pgq_coop.version() returns text language sql as $$ select '3.1.1' $$;
         create function pgq_coop.register_subconsumer(text, text, text) returns integer
             language sql as $$ select 1 $$;
         create function pgq_coop.unregister_subconsumer(text, text, text, integer)
             returns integer language sql as $$ select 1 $$;
         create function pgq_coop.next_batch_custom(text, text, text, interval, int4, interval,
             interval) returns int8 language sql as $$ select null::int8 $$;
         create function pgq_coop.finish_batch(int8) returns integer
             language sql as $$ select 1 $$;
         create function pgq_coop.touch(text, text, text) returns integer
             language sql as $$ select 1 $$;",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refuses_to_start_against_a_pgq_coop_that_is_not_ours() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "foreign").await;
    let mut conn = pool.acquire().await.unwrap();
    assert!(matches!(
        pgq_core::coop_flavor(&mut conn).await.unwrap(),
        Some(pgq_core::CoopFlavor::PgqRs { .. })
    ));
    foreign_pgq_coop(pool).await;
    assert_eq!(
        pgq_core::coop_flavor(&mut conn).await.unwrap(),
        Some(pgq_core::CoopFlavor::Other {
            version: Some("3.1.1".into())
        })
    );
    let member = CoopConsumer::coop_builder(pool.clone(), q.clone(), c("g"), c("a"))
        .build()
        .unwrap();
    let handler = handler_fn(|_ev: Event| async { Ok::<_, HandlerError>(()) });
    let err = member
        .run(handler.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CoopUnsupported, "{err}");
    assert!(err.is_fatal());
    assert!(err.to_string().contains("not installed by pgq_rs"), "{err}");
    assert!(
        pgq_core::get_consumer_info(pool, &q, &c("g"))
            .await
            .unwrap()
            .is_none(),
        "refused before registering anything"
    );

    exec(pool, "drop schema pgq_coop cascade").await;
    assert_eq!(pgq_core::coop_flavor(&mut conn).await.unwrap(), None);
    let err = member.register().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CoopUnsupported, "{err}");
    assert!(err.to_string().contains("pgq install"), "{err}");
}

/// A member whose handler hangs stops touching after `stall_heartbeats` heartbeats without
/// progress, and another member takes its batch over after the dead interval. (Without the
/// setting, the heartbeat keeps a hung handler's batch forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_stops_the_heartbeat_and_its_batch_is_taken_over() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "hung").await;
    let dead = Duration::from_secs(1);
    let a_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&db.url())
        .await
        .unwrap();
    let a = CoopConsumer::coop_builder(a_pool, q.clone(), c("g"), c("a"))
        .dead_interval(dead)
        .heartbeat_interval(Duration::from_millis(100))
        .stall_heartbeats(3)
        .build()
        .unwrap();
    let b = CoopConsumer::coop_builder(pool.clone(), q.clone(), c("g"), c("b"))
        .dead_interval(dead)
        .build()
        .unwrap();
    a.register().await.unwrap();
    b.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    tick(pool, &q).await;

    // a handles one event, then hangs on the second until released.
    let release = Arc::new(Notify::new());
    let handled = Arc::new(Mutex::new(0u32));
    let handler = handler_fn({
        let (release, handled) = (release.clone(), handled.clone());
        move |_ev: Event| {
            let (release, handled) = (release.clone(), handled.clone());
            async move {
                let n = {
                    let mut h = handled.lock().unwrap();
                    *h += 1;
                    *h
                };
                if n == 2 {
                    release.notified().await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (a, shutdown) = (a.clone(), shutdown.clone());
        async move { a.run(handler, shutdown).await }
    });
    wait_for("a to hang in its handler", || async {
        *handled.lock().unwrap() >= 2
    })
    .await;

    // b keeps asking; once a has stopped touching and been silent for the dead interval, b
    // takes the batch over and handles every event of it.
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    let mut conn = pool.acquire().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(mut batch) = b.next_batch(&mut conn).await.unwrap() {
            let events: Vec<Event> = batch.events().try_collect().await.unwrap();
            for ev in events {
                *seen.entry(ev.ev_id).or_default() += 1;
            }
            batch.finish().await.unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for b to take the hung member's batch over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 5, "b got the whole batch: {seen:?}");

    // a's handler comes back: its finish is refused (the batch is b's now), and it stops cleanly.
    release.notify_one();
    shutdown.cancel();
    run.await.unwrap().unwrap();
}
