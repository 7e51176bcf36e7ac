//! The core PgQ flow: send, tick and receive; batches; retries; rewind.

use std::time::Duration;

use pgq_core::{BatchTuning, ConsumerName, EventFilter, NewEvent, QueueName, TickId};
use pgq_testkit::TestDb;

use crate::common::{batch, drain, setup, tick};

#[tokio::test]
async fn send_tick_receive_in_separate_transactions() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "flow", "reader").await;

    // Produce in the application's transaction, through each insert path.
    let mut tx = pool.begin().await.unwrap();
    let id1 = pgq_core::insert_event(&mut *tx, &q, "t1", "d1")
        .await
        .unwrap();
    let ev = NewEvent::new("t2", "d2")
        .extra1("x1")
        .extra2("x2")
        .extra3("x3")
        .extra4("x4");
    let id2 = pgq_core::insert_event_ext(&mut *tx, &q, &ev).await.unwrap();
    let many = [
        NewEvent::new("t3", "d3"),
        NewEvent::new("t4", "d4").extra1("tbl"),
    ];
    let ids = pgq_core::insert_events(&mut *tx, &q, &many).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(
        id1 < id2 && id2 < ids[0] && ids[0] < ids[1],
        "ids increase in insert order"
    );

    // Committed but not ticked: nothing to read yet.
    assert_eq!(pgq_core::next_batch(pool, &q, &c).await.unwrap(), None);

    let t = tick(pool, &q).await;
    let info = pgq_core::next_batch_info(pool, &q, &c)
        .await
        .unwrap()
        .expect("batch");
    assert_eq!(info.cur_tick_id, t);
    assert!(info.prev_tick_id < t);
    // An upper bound (sequence difference; tick_now's pgq.force_tick moves the sequence too);
    // the exact count is what the batch holds, below.
    assert!(info.estimated_events() >= 4, "{info:?}");

    // The same batch until it is finished (at-least-once).
    assert_eq!(
        pgq_core::next_batch(pool, &q, &c).await.unwrap(),
        Some(info.batch_id)
    );
    let again = pgq_core::next_batch_custom(pool, &q, &c, BatchTuning::default())
        .await
        .unwrap();
    assert_eq!(again.map(|b| b.batch_id), Some(info.batch_id));

    let mut evs = pgq_core::get_batch_events(pool, info.batch_id)
        .await
        .unwrap();
    evs.sort_by_key(|e| e.ev_id);
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[0].ev_id, id1.get());
    assert_eq!(
        (evs[0].ev_type.as_deref(), evs[0].ev_data.as_deref()),
        (Some("t1"), Some("d1"))
    );
    assert_eq!(evs[0].ev_retry, None);
    assert_eq!(evs[0].retry_count(), 0);
    assert_eq!(
        [
            &evs[1].ev_extra1,
            &evs[1].ev_extra2,
            &evs[1].ev_extra3,
            &evs[1].ev_extra4
        ],
        [
            &Some("x1".into()),
            &Some("x2".into()),
            &Some("x3".into()),
            &Some("x4".into())
        ]
    );
    assert_eq!(evs[3].ev_extra1.as_deref(), Some("tbl"));
    assert!(
        evs.iter().all(|e| e.ev_txid == evs[0].ev_txid),
        "one producing transaction"
    );

    let details = pgq_core::get_batch_info(pool, info.batch_id).await.unwrap();
    assert_eq!(
        (details.queue_name.as_str(), details.consumer_name.as_str()),
        ("flow", "reader")
    );
    assert_eq!(details.tick_id, t);
    assert_eq!(
        pgq_core::batch_owner(pool, info.batch_id).await.unwrap(),
        Some(("flow".to_owned(), "reader".to_owned()))
    );

    pgq_core::finish_batch(pool, info.batch_id).await.unwrap();
    assert_eq!(
        pgq_core::batch_owner(pool, info.batch_id).await.unwrap(),
        None
    );
    assert_eq!(pgq_core::next_batch(pool, &q, &c).await.unwrap(), None);
    // Finishing twice is an error, not a silent no-op.
    let e = pgq_core::finish_batch(pool, info.batch_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::BatchNotFound);
}

#[tokio::test]
async fn an_insert_in_the_ticks_own_transaction_is_delivered_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "defer", "c").await;

    let mut tx = pool.begin().await.unwrap();
    let id = pgq_core::insert_event(&mut *tx, &q, "t", "late")
        .await
        .unwrap();
    pgq_core::tick_now(&mut tx, &q)
        .await
        .unwrap()
        .expect("tick");
    tx.commit().await.unwrap();

    // Which batch holds it depends on the tick's snapshot: it is later than the tick's own
    // transaction only while no transaction started after it has ended (other sessions move
    // the snapshot's xmax). Either way it comes exactly once.
    let b = batch(pool, &q, &c).await;
    let mut got = pgq_core::get_batch_events(pool, b).await.unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
    tick(pool, &q).await;
    got.extend(drain(pool, &q, &c).await);
    assert_eq!(
        got.iter().map(|e| e.ev_id).collect::<Vec<_>>(),
        vec![id.get()]
    );
}

#[tokio::test]
async fn empty_batches_are_returned_and_must_be_finished() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "idle", "c").await;
    for _ in 0..3 {
        tick(pool, &q).await;
        let b = batch(pool, &q, &c).await;
        assert!(
            pgq_core::get_batch_events(pool, b)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            pgq_core::next_batch(pool, &q, &c).await.unwrap(),
            Some(b),
            "not finished yet"
        );
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    assert_eq!(pgq_core::next_batch(pool, &q, &c).await.unwrap(), None);
    // With a min_count, an idle batch is not handed out (tick by idle period, no forced count).
    let cfg = pgq_core::QueueConfig {
        ticker_idle_period: Some(Duration::from_millis(1)),
        ticker_max_lag: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &q, &cfg)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    pgq_core::ticker_queue(pool, &q)
        .await
        .unwrap()
        .expect("idle tick");
    let tuning = BatchTuning {
        min_count: Some(10),
        ..Default::default()
    };
    assert_eq!(
        pgq_core::next_batch_custom(pool, &q, &c, tuning)
            .await
            .unwrap(),
        None
    );
    let tuning = BatchTuning {
        min_lag: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    assert_eq!(
        pgq_core::next_batch_custom(pool, &q, &c, tuning)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn retried_events_come_back_after_the_retry_step_and_a_tick() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "retry", "c").await;
    let ids = pgq_core::insert_events(
        pool,
        &q,
        &[
            NewEvent::new("a", "1"),
            NewEvent::new("b", "2"),
            NewEvent::new("c", "3"),
        ],
    )
    .await
    .unwrap();
    tick(pool, &q).await;
    let b = batch(pool, &q, &c).await;
    assert!(
        pgq_core::event_retry(pool, b, ids[0], Duration::ZERO)
            .await
            .unwrap()
    );
    // Already in the retry queue: false.
    assert!(
        !pgq_core::event_retry(pool, b, ids[0], Duration::ZERO)
            .await
            .unwrap()
    );
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    assert!(
        pgq_core::event_retry_at(pool, b, ids[1], past)
            .await
            .unwrap()
    );
    pgq_core::finish_batch(pool, b).await.unwrap();

    // Not back yet: the retry mover has not run.
    tick(pool, &q).await;
    assert!(drain(pool, &q, &c).await.is_empty());

    let moved = pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(moved, 2);
    tick(pool, &q).await;
    let back = drain(pool, &q, &c).await;
    assert_eq!(
        back.iter().map(|e| e.ev_id).collect::<Vec<_>>(),
        vec![ids[0].get(), ids[1].get()]
    );
    assert!(back.iter().all(|e| e.ev_retry == Some(1)), "{back:?}");
    assert_eq!(back[0].ev_data.as_deref(), Some("1"));

    // batch_retry sends the whole batch back, and the count goes up again.
    pgq_core::insert_event(pool, &q, "d", "4").await.unwrap();
    tick(pool, &q).await;
    let b = batch(pool, &q, &c).await;
    assert_eq!(
        pgq_core::batch_retry(pool, b, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    pgq_core::finish_batch(pool, b).await.unwrap();
    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &q).await;
    let back = drain(pool, &q, &c).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].ev_retry, Some(1));

    // event_retry_raw puts an arbitrary event into a consumer's retry queue.
    let mut ev = back[0].clone();
    ev.ev_retry = Some(7);
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let id = pgq_core::event_retry_raw(pool, &q, &c, due, &ev)
        .await
        .unwrap();
    assert_eq!(id.get(), ev.ev_id);
    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &q).await;
    let back = drain(pool, &q, &c).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].ev_retry,
        Some(7),
        "raw retry keeps the count it is given"
    );
}

#[tokio::test]
async fn register_consumer_at_rewinds_a_consumer() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "rewind", "c").await;
    let start = pgq_core::get_consumer_info(pool, &q, &c)
        .await
        .unwrap()
        .unwrap()
        .last_tick
        .unwrap();
    pgq_core::insert_event(pool, &q, "a", "1").await.unwrap();
    tick(pool, &q).await;
    assert_eq!(drain(pool, &q, &c).await.len(), 1);
    pgq_core::insert_event(pool, &q, "b", "2").await.unwrap();
    tick(pool, &q).await;
    assert_eq!(drain(pool, &q, &c).await.len(), 1);

    assert!(
        !pgq_core::register_consumer_at(pool, &q, &c, start)
            .await
            .unwrap()
    );
    let again = drain(pool, &q, &c).await;
    assert_eq!(
        again
            .iter()
            .map(|e| e.ev_data.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["1", "2"]
    );

    // A new consumer can start at an old tick too.
    let c2 = crate::common::c("late");
    assert!(
        pgq_core::register_consumer_at(pool, &q, &c2, start)
            .await
            .unwrap()
    );
    assert_eq!(drain(pool, &q, &c2).await.len(), 2);

    let e = pgq_core::register_consumer_at(pool, &q, &c2, TickId(9_999_999))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::TickNotFound, "{e}");
}

#[tokio::test]
async fn consumers_are_independent_and_reported() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, a) = setup(pool, "fanout", "a").await;
    let b = crate::common::c("b");
    pgq_core::register_consumer(pool, &q, &b).await.unwrap();
    assert!(
        !pgq_core::register_consumer(pool, &q, &b).await.unwrap(),
        "already registered"
    );
    pgq_core::insert_events(pool, &q, &vec![NewEvent::new("t", "d"); 5])
        .await
        .unwrap();
    tick(pool, &q).await;
    assert_eq!(drain(pool, &q, &a).await.len(), 5);

    let infos = pgq_core::get_consumer_info_queue(pool, &q).await.unwrap();
    assert_eq!(infos.len(), 2);
    let ib = infos.iter().find(|i| i.consumer_name == "b").unwrap();
    // An estimate from sequences (tick_now's pgq.force_tick moves the sequence too).
    assert!(ib.pending_events >= 5, "{ib:?}");
    assert_eq!(
        pgq_core::get_consumer_info_all(pool).await.unwrap().len(),
        2
    );
    let bid = batch(pool, &q, &b).await;
    let ib = pgq_core::get_consumer_info(pool, &q, &b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ib.current_batch, Some(bid));
    assert!(ib.next_tick.is_some());
    assert_eq!(
        pgq_core::get_batch_events(pool, bid).await.unwrap().len(),
        5
    );
    pgq_core::finish_batch(pool, bid).await.unwrap();

    assert_eq!(
        pgq_core::unregister_consumer(pool, &q, &b).await.unwrap(),
        1
    );
    assert_eq!(
        pgq_core::get_consumer_info(pool, &q, &b).await.unwrap(),
        None
    );
    let e = pgq_core::next_batch(pool, &q, &b).await.unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::ConsumerNotRegistered);
}

/// A queue `name` with consumer `c` holding an open batch of ten events, types "even" and "odd"
/// in turn (data 0..9).
async fn even_odd_batch(pool: &sqlx::PgPool, name: &str) -> pgq_core::BatchId {
    let (q, c) = setup(pool, name, "c").await;
    let evs: Vec<_> = (0..10)
        .map(|i| NewEvent::new(if i % 2 == 0 { "even" } else { "odd" }, i.to_string()))
        .collect();
    pgq_core::insert_events(pool, &q, &evs).await.unwrap();
    tick(pool, &q).await;
    batch(pool, &q, &c).await
}

#[tokio::test]
async fn batch_cursor_and_event_sql() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let b = even_odd_batch(pool, "cursor").await;
    let sql = pgq_core::batch_event_sql(pool, b).await.unwrap();
    assert!(sql.to_lowercase().contains("select"));

    let mut tx = pool.begin().await.unwrap();
    let first = pgq_core::get_batch_cursor(&mut tx, b, "pgq_cur", 3, None)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let even = pgq_core::get_batch_cursor(&mut tx, b, "pgq_cur2", 100, Some("ev_type = 'even'"))
        .await
        .unwrap();
    assert_eq!(even.len(), 5);
    tx.rollback().await.unwrap();

    // Typed filters agree with the raw-SQL filter.
    let filter = EventFilter {
        ev_types: vec!["even".into()],
        ..Default::default()
    };
    let mut conn = pool.acquire().await.unwrap();
    let s = pgq_core::stream_batch_events(&mut conn, b, &filter)
        .await
        .unwrap();
    let got: Vec<_> = futures_util::TryStreamExt::try_collect::<Vec<_>>(s)
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|e| filter.matches(e)));
    drop(conn);
    pgq_core::finish_batch(pool, b).await.unwrap();
}

#[tokio::test]
async fn declared_batch_cursor_reads_in_chunks_with_filters() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let b = even_odd_batch(pool, "declared").await;

    // No filter: every event, in id order, in chunks.
    let mut tx = pool.begin().await.unwrap();
    pgq_core::declare_batch_cursor(&mut tx, b, &EventFilter::default())
        .await
        .unwrap();
    let first = pgq_core::fetch_batch_cursor(&mut tx, b, 4).await.unwrap();
    let rest = pgq_core::fetch_batch_cursor(&mut tx, b, 100).await.unwrap();
    let ids: Vec<i64> = first.iter().chain(&rest).map(|e| e.ev_id).collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        pgq_core::fetch_batch_cursor(&mut tx, b, 100)
            .await
            .unwrap()
            .is_empty()
    );
    tx.rollback().await.unwrap();

    // A typed filter, bound as parameters: a value that would break spliced SQL matches nothing.
    let mut tx = pool.begin().await.unwrap();
    let filter = EventFilter {
        ev_types: vec!["odd".into(), "x'); drop table pgq.queue; --".into()],
        ..Default::default()
    };
    pgq_core::declare_batch_cursor(&mut tx, b, &filter)
        .await
        .unwrap();
    let odd = pgq_core::fetch_batch_cursor(&mut tx, b, 100).await.unwrap();
    assert_eq!(odd.len(), 5);
    assert!(odd.iter().all(|e| e.ev_type.as_deref() == Some("odd")));
    tx.rollback().await.unwrap();

    // Outside a transaction the cursor does not survive the call: reading says why.
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::declare_batch_cursor(&mut conn, b, &EventFilter::default())
        .await
        .unwrap();
    let e = pgq_core::fetch_batch_cursor(&mut conn, b, 10)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("needs a transaction"), "{e}");

    // A batch that is not open.
    let mut tx = pool.begin().await.unwrap();
    let e = pgq_core::declare_batch_cursor(&mut tx, pgq_core::BatchId(987_654), &filter)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pgq_core::ErrorKind::BatchNotFound, "{e}");
    tx.rollback().await.unwrap();
    drop(conn);
    pgq_core::finish_batch(pool, b).await.unwrap();
}

#[tokio::test]
async fn finish_own_batch_only_finishes_the_holders_batch() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "ownfinish", "c").await;
    let other = ConsumerName::new("other").unwrap();
    pgq_core::register_consumer(pool, &q, &other).await.unwrap();
    let q2 = QueueName::new("ownfinish2").unwrap();
    pgq_core::create_queue(pool, &q2).await.unwrap();
    pgq_core::register_consumer(pool, &q2, &c).await.unwrap();
    pgq_core::insert_event(pool, &q, "t", "1").await.unwrap();
    tick(pool, &q).await;
    let b = batch(pool, &q, &c).await;

    // Another consumer, or the same consumer name on another queue: nothing is finished.
    assert!(
        !pgq_core::finish_own_batch(pool, b, &q, &other)
            .await
            .unwrap()
    );
    assert!(!pgq_core::finish_own_batch(pool, b, &q2, &c).await.unwrap());
    assert_eq!(
        pgq_core::batch_owner(pool, b).await.unwrap(),
        Some((q.to_string(), c.to_string()))
    );
    // The holder: finished, once.
    assert!(pgq_core::finish_own_batch(pool, b, &q, &c).await.unwrap());
    assert!(!pgq_core::finish_own_batch(pool, b, &q, &c).await.unwrap());
    assert_eq!(pgq_core::batch_owner(pool, b).await.unwrap(), None);
}
