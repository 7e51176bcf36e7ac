//! The pgq_coop-compatible schema: sharing, and the hazards of the original, fixed.

use std::time::Duration;

use pgq_core::sqlx::{self, PgPool};
use pgq_core::{BatchHandling, BatchId, BatchTuning, ErrorKind, NewEvent, QueueName};
use pgq_testkit::TestDb;

use crate::common::{c, q, tick};

async fn group(pool: &PgPool, queue: &str, members: &[&str]) -> QueueName {
    let qn = q(queue);
    pgq_core::create_queue(pool, &qn).await.unwrap();
    for m in members {
        assert!(
            pgq_core::coop_register_member(pool, &qn, &c("g"), &c(m))
                .await
                .unwrap()
        );
    }
    qn
}

async fn next(pool: &PgPool, qn: &QueueName, m: &str, dead: Option<Duration>) -> Option<BatchId> {
    pgq_core::coop_next_batch(pool, qn, &c("g"), &c(m), BatchTuning::default(), dead)
        .await
        .unwrap()
}

async fn data(pool: &PgPool, b: BatchId) -> Vec<String> {
    let mut v: Vec<String> = pgq_core::get_batch_events(pool, b)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.ev_data.unwrap())
        .collect();
    v.sort();
    v
}

async fn produce_and_tick(pool: &PgPool, qn: &QueueName, items: &[&str]) {
    let evs: Vec<_> = items.iter().map(|d| NewEvent::new("t", *d)).collect();
    pgq_core::insert_events(pool, qn, &evs).await.unwrap();
    tick(pool, qn).await;
}

async fn make_dead(pool: &PgPool, member: &str) {
    sqlx::query(
        "update pgq.subscription set sub_active = now() - interval '1 hour'
          where sub_consumer = (select co_id from pgq.consumer where co_name = $1)",
    )
    .bind(member)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn members_split_the_batches_of_one_position() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "coop", &["a", "b"]).await;
    assert!(
        !pgq_core::coop_register_member(pool, &qn, &c("g"), &c("a"))
            .await
            .unwrap(),
        "exists"
    );
    assert!(
        pgq_core::coop_version(&mut pool.acquire().await.unwrap())
            .await
            .unwrap()
            .is_some()
    );
    produce_and_tick(pool, &qn, &["1", "2"]).await;
    produce_and_tick(pool, &qn, &["3"]).await;

    let ba = next(pool, &qn, "a", None).await.expect("a gets a batch");
    let bb = next(pool, &qn, "b", None)
        .await
        .expect("b gets the next one");
    assert_ne!(ba, bb);
    assert_eq!(
        next(pool, &qn, "a", None).await,
        Some(ba),
        "same batch until finished"
    );
    let (da, db_) = (data(pool, ba).await, data(pool, bb).await);
    assert_eq!(da, vec!["1", "2"]);
    assert_eq!(db_, vec!["3"]);

    // Members are visible in pgq as group.member; a member's batch is its own.
    let names: Vec<String> = pgq_core::get_consumer_info_queue(pool, &qn)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.consumer_name)
        .collect();
    assert_eq!(names, vec!["g", "g.a", "g.b"]);
    assert_eq!(
        pgq_core::batch_owner(pool, ba).await.unwrap().unwrap().1,
        "g.a"
    );

    pgq_core::coop_finish_batch(pool, ba).await.unwrap();
    pgq_core::coop_finish_batch(pool, bb).await.unwrap();
    assert_eq!(next(pool, &qn, "a", None).await, None);
    // Retries inside a member's batch go back to the group.
    produce_and_tick(pool, &qn, &["4"]).await;
    let b = next(pool, &qn, "b", None).await.unwrap();
    let ev = pgq_core::get_batch_events(pool, b).await.unwrap().remove(0);
    pgq_core::event_retry(pool, b, ev.id(), Duration::ZERO)
        .await
        .unwrap();
    pgq_core::coop_finish_batch(pool, b).await.unwrap();
    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &qn).await;
    let b = next(pool, &qn, "a", None).await.unwrap();
    let back = pgq_core::get_batch_events(pool, b).await.unwrap();
    assert_eq!((back.len(), back[0].ev_retry), (1, Some(1)));

    // Unregistering the group removes every member.
    pgq_core::unregister_consumer(pool, &qn, &c("g"))
        .await
        .unwrap();
    assert!(
        pgq_core::get_consumer_info_queue(pool, &qn)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn takeover_hands_out_a_fresh_batch_id_and_the_old_one_stops_working() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "take", &["a", "b"]).await;
    produce_and_tick(pool, &qn, &["x", "y"]).await;
    let old = next(pool, &qn, "a", None).await.unwrap();
    // Alive: no takeover.
    assert_eq!(
        next(pool, &qn, "b", Some(Duration::from_secs(60))).await,
        None
    );
    make_dead(pool, "g.a").await;
    let new = next(pool, &qn, "b", Some(Duration::from_secs(60)))
        .await
        .expect("takeover");
    assert_ne!(new, old, "fresh id");
    assert_eq!(data(pool, new).await, vec!["x", "y"], "same events");

    // The late finish with the old id is refused and does not close the new owner's batch.
    let e = pgq_core::coop_finish_batch(pool, old).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BatchNotFound, "{e}");
    let e = pgq_core::finish_batch(pool, old).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BatchNotFound, "{e}");
    let e = pgq_core::get_batch_events(pool, old).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::BatchNotFound,
        "old id reads nothing: {e}"
    );
    assert_eq!(
        pgq_core::batch_owner(pool, new).await.unwrap().unwrap().1,
        "g.b"
    );
    // The dead member was not deleted; it simply has no batch now.
    assert_eq!(next(pool, &qn, "a", None).await, None);
    pgq_core::coop_finish_batch(pool, new).await.unwrap();
}

#[tokio::test]
async fn heartbeat_keeps_a_long_handler_and_idle_members_survive_the_scan() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "beat", &["a", "b", "idle"]).await;
    produce_and_tick(pool, &qn, &["x"]).await;
    let ba = next(pool, &qn, "a", None).await.unwrap();
    make_dead(pool, "g.a").await;
    make_dead(pool, "g.idle").await;
    pgq_core::coop_touch(pool, &qn, &c("g"), &c("a"))
        .await
        .unwrap();
    assert_eq!(
        next(pool, &qn, "b", Some(Duration::from_secs(60))).await,
        None,
        "a is alive"
    );
    assert_eq!(next(pool, &qn, "a", None).await, Some(ba));
    let names: Vec<String> = pgq_core::get_consumer_info_queue(pool, &qn)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.consumer_name)
        .collect();
    assert!(
        names.contains(&"g.idle".to_owned()),
        "idle member kept: {names:?}"
    );
}

#[tokio::test]
async fn unregistering_a_member_with_a_batch_returns_its_events_to_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "unreg", &["a", "b"]).await;
    produce_and_tick(pool, &qn, &["p", "q"]).await;
    let ba = next(pool, &qn, "a", None).await.unwrap();
    let e = pgq_core::coop_unregister_member(pool, &qn, &c("g"), &c("a"), BatchHandling::Refuse)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        pgq_core::coop_unregister_member(pool, &qn, &c("g"), &c("a"), BatchHandling::ReturnToGroup)
            .await
            .unwrap()
    );
    assert!(
        !pgq_core::coop_unregister_member(pool, &qn, &c("g"), &c("a"), BatchHandling::Refuse)
            .await
            .unwrap(),
        "already gone"
    );
    assert!(pgq_core::batch_owner(pool, ba).await.unwrap().is_none());
    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &qn).await;
    let mut got = Vec::new();
    while let Some(b) = next(pool, &qn, "b", None).await {
        got.extend(data(pool, b).await);
        pgq_core::coop_finish_batch(pool, b).await.unwrap();
    }
    got.sort();
    assert_eq!(got, vec!["p", "q"], "nothing lost");
}

#[tokio::test]
async fn coop_functions_refuse_plain_consumers_and_dotted_names() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "plain", &["a"]).await;
    pgq_core::register_consumer(pool, &qn, &c("p"))
        .await
        .unwrap();
    produce_and_tick(pool, &qn, &["z"]).await;
    let pb = pgq_core::next_batch(pool, &qn, &c("p"))
        .await
        .unwrap()
        .unwrap();
    let e = pgq_core::coop_finish_batch(pool, pb).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(
        pgq_core::next_batch(pool, &qn, &c("p")).await.unwrap(),
        Some(pb),
        "still open"
    );
    // A plain consumer holding a batch cannot become a group.
    let e = pgq_core::coop_register_member(pool, &qn, &c("p"), &c("m"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // A plain consumer named like a member is not one.
    pgq_core::register_consumer(pool, &qn, &c("g.fake"))
        .await
        .unwrap();
    let e = pgq_core::coop_register_member(pool, &qn, &c("g"), &c("fake"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // Dots are refused, by the library and by the schema itself.
    let e = pgq_core::coop_register_member(pool, &qn, &c("g.x"), &c("m"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    let e = pgq_core::coop_next_batch(pool, &qn, &c("g"), &c("m.n"), BatchTuning::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    let r = sqlx::query("select pgq_coop.register_subconsumer('plain', 'g', 'a.b')")
        .execute(pool)
        .await;
    assert!(r.unwrap_err().to_string().contains("must not contain"));
    // Unknown member / queue.
    let e = pgq_core::coop_next_batch(
        pool,
        &qn,
        &c("g"),
        &c("nobody"),
        BatchTuning::default(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConsumerNotRegistered, "{e}");
    let e = pgq_core::coop_register_member(pool, &q("nope"), &c("g"), &c("a"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_takeovers_never_hand_out_one_batch_twice() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let members: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    all.push("dead");
    let qn = group(pool, "race", &all).await;
    produce_and_tick(pool, &qn, &["only"]).await;
    next(pool, &qn, "dead", None).await.unwrap();
    make_dead(pool, "g.dead").await;

    let mut tasks = Vec::new();
    for m in members {
        let (pool, qn) = (pool.clone(), qn.clone());
        tasks.push(tokio::spawn(async move {
            pgq_core::coop_next_batch(
                &pool,
                &qn,
                &c("g"),
                &c(&m),
                BatchTuning::default(),
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(b) = t.await.unwrap() {
            got.push(b);
        }
    }
    assert_eq!(
        got.len(),
        1,
        "exactly one member took the batch over: {got:?}"
    );
    assert_eq!(data(pool, got[0]).await, vec!["only"]);
}

/// Whoever unregisters a member holding a batch — pgq_core::unregister_consumer (what `pgq
/// consumer unregister Q g.a` calls) or SQL through pgq_rs.unregister_consumer — its events go
/// back to the group. (pgq.unregister_consumer alone deletes the member's row and the batch's
/// events are never seen again by the group.)
#[tokio::test]
async fn unregister_consumer_on_a_member_holding_a_batch_returns_its_events_to_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = group(pool, "unreg_any", &["a", "b", "c", "idle"]).await;
    produce_and_tick(pool, &qn, &["p", "q"]).await;
    produce_and_tick(pool, &qn, &["r"]).await;
    let ba = next(pool, &qn, "a", None).await.unwrap();
    let bb = next(pool, &qn, "b", None).await.unwrap();
    assert_ne!(ba, bb);

    assert_eq!(
        pgq_core::unregister_consumer(pool, &qn, &c("g.a"))
            .await
            .unwrap(),
        1
    );
    let n: i32 = sqlx::query_scalar("select pgq_rs.unregister_consumer($1, 'g.b')")
        .bind(qn.as_str())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        pgq_core::unregister_consumer(pool, &qn, &c("g.idle"))
            .await
            .unwrap(),
        1,
        "an idle member just goes"
    );
    assert_eq!(
        pgq_core::unregister_consumer(pool, &qn, &c("g.a"))
            .await
            .unwrap(),
        0,
        "already gone"
    );
    assert!(pgq_core::batch_owner(pool, ba).await.unwrap().is_none());
    assert!(pgq_core::batch_owner(pool, bb).await.unwrap().is_none());
    assert!(
        pgq_core::get_consumer_info(pool, &qn, &c("g"))
            .await
            .unwrap()
            .is_some(),
        "the group stays"
    );

    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &qn).await;
    let mut got = Vec::new();
    while let Some(b) = next(pool, &qn, "c", None).await {
        got.extend(data(pool, b).await);
        pgq_core::coop_finish_batch(pool, b).await.unwrap();
    }
    got.sort();
    assert_eq!(got, vec!["p", "q", "r"], "nothing lost");

    // Unregistering the group itself still removes the group with its members.
    assert_eq!(
        pgq_core::unregister_consumer(pool, &qn, &c("g"))
            .await
            .unwrap(),
        2
    );
}

/// pgq_rs.register_consumer (register_consumer_if_new) never moves a registered consumer, and
/// many simultaneous first registrations register it exactly once, without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registering_if_new_is_atomic_and_never_rewinds() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = crate::common::q("reg_once");
    pgq_core::create_queue(pool, &qn).await.unwrap();
    let t0 = tick(pool, &qn).await;
    produce_and_tick(pool, &qn, &["1"]).await;

    let cn = c("once");
    assert!(
        pgq_core::register_consumer_if_new(pool, &qn, &cn, Some(t0))
            .await
            .unwrap()
    );
    let b = pgq_core::next_batch(pool, &qn, &cn).await.unwrap().unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
    let pos = |pool: PgPool, cn: pgq_core::ConsumerName| {
        let qn = qn.clone();
        async move {
            pgq_core::get_consumer_info(&pool, &qn, &cn)
                .await
                .unwrap()
                .unwrap()
                .last_tick
        }
    };
    let after = pos(pool.clone(), cn.clone()).await;
    assert_ne!(after, Some(t0));
    assert!(
        !pgq_core::register_consumer_if_new(pool, &qn, &cn, Some(t0))
            .await
            .unwrap()
    );
    assert_eq!(pos(pool.clone(), cn.clone()).await, after, "not rewound");

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (pool, qn, barrier) = (pool.clone(), qn.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            pgq_core::register_consumer_if_new(&pool, &qn, &c("many"), Some(t0)).await
        }));
    }
    let mut newly = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            newly += 1;
        }
    }
    assert_eq!(newly, 1, "registered exactly once");
}
