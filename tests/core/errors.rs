//! Bad input and unknown names give typed errors and change nothing.

use pgq_core::{BatchId, ErrorKind, NewEvent, QueueConfig};
use pgq_testkit::TestDb;

use crate::common::{c, q, setup, tick};

#[tokio::test]
async fn unknown_names_give_typed_errors() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let nq = q("no_such_queue");
    let cn = c("nobody");

    let e = pgq_core::insert_event(pool, &nq, "t", "d")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    assert!(e.to_string().contains("no_such_queue"), "{e}");
    let e = pgq_core::insert_events(pool, &nq, &[NewEvent::new("t", "d")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::register_consumer(pool, &nq, &cn)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::get_queue_info(pool, &nq).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::get_queue_config(pool, &nq).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::drop_queue(pool, &nq, false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::current_event_table(pool, &nq).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::force_tick(pool, &nq).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::ticker_queue(pool, &nq).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::set_queue_config(
        &mut pool.acquire().await.unwrap(),
        &nq,
        &QueueConfig {
            ticker_max_count: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");
    let e = pgq_core::copy_events(
        &mut pool.acquire().await.unwrap(),
        &nq,
        futures_util::stream::iter([Ok::<_, std::io::Error>(NewEvent::new("t", "d"))]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueNotFound, "{e}");

    let (qn, _) = setup(pool, "known", "someone").await;
    let e = pgq_core::next_batch(pool, &qn, &cn).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConsumerNotRegistered, "{e}");
    let e = pgq_core::next_batch_info(pool, &qn, &cn).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConsumerNotRegistered, "{e}");
    assert_eq!(
        pgq_core::unregister_consumer(pool, &qn, &cn).await.unwrap(),
        0,
        "nothing to remove"
    );
    assert_eq!(
        pgq_core::get_consumer_info(pool, &qn, &cn).await.unwrap(),
        None
    );

    let nb = BatchId(987_654);
    for e in [
        pgq_core::finish_batch(pool, nb).await.unwrap_err(),
        pgq_core::get_batch_events(pool, nb).await.unwrap_err(),
        pgq_core::batch_event_sql(pool, nb).await.unwrap_err(),
        pgq_core::get_batch_info(pool, nb).await.unwrap_err(),
        pgq_core::batch_retry(pool, nb, std::time::Duration::ZERO)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::BatchNotFound, "{e}");
    }
    let mut conn = pool.acquire().await.unwrap();
    let e = match pgq_core::stream_batch_events(&mut conn, nb, &Default::default()).await {
        Err(e) => e,
        Ok(_) => panic!("stream of an unknown batch"),
    };
    assert_eq!(e.kind(), ErrorKind::BatchNotFound, "{e}");
}

#[tokio::test]
async fn queue_state_errors() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (qn, cn) = setup(pool, "state", "c").await;

    // Dropping a queue with consumers needs force.
    let e = pgq_core::drop_queue(pool, &qn, false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueHasConsumers, "{e}");
    assert!(pgq_core::queue_exists(pool, &qn).await.unwrap());

    // Inserts disabled: every path refuses, nothing inserted.
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::set_insert_disabled(&mut conn, &qn, true)
        .await
        .unwrap();
    let e = pgq_core::insert_event(pool, &qn, "t", "d")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsertDisabled, "{e}");
    let e = pgq_core::insert_events(pool, &qn, &[NewEvent::new("t", "d")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsertDisabled, "{e}");
    let e = pgq_core::copy_events(
        &mut conn,
        &qn,
        futures_util::stream::iter([Ok::<_, std::io::Error>(NewEvent::new("t", "d"))]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsertDisabled, "{e}");
    pgq_core::set_insert_disabled(&mut conn, &qn, false)
        .await
        .unwrap();

    // Per-transaction limit.
    let cfg = QueueConfig {
        per_tx_limit: Some(Some(2)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut conn, &qn, &cfg)
        .await
        .unwrap();
    let e = pgq_core::insert_events(pool, &qn, &vec![NewEvent::new("t", "d"); 3])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PerTxLimit, "{e}");
    let three = futures_util::stream::iter(vec![Ok::<_, String>(NewEvent::new("t", "d")); 3]);
    let mut tx = pool.begin().await.unwrap();
    let e = pgq_core::copy_events(&mut tx, &qn, three)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PerTxLimit, "{e}");
    tx.rollback().await.unwrap();
    pgq_core::insert_events(pool, &qn, &vec![NewEvent::new("t", "ok"); 2])
        .await
        .unwrap();
    let cfg = QueueConfig {
        per_tx_limit: Some(None),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut conn, &qn, &cfg)
        .await
        .unwrap();
    assert_eq!(
        pgq_core::get_queue_config(pool, &qn)
            .await
            .unwrap()
            .per_tx_limit,
        None
    );

    // Only the two accepted events were stored.
    tick(pool, &qn).await;
    let evs = crate::common::drain(pool, &qn, &cn).await;
    assert_eq!(evs.len(), 2);
    assert!(evs.iter().all(|e| e.ev_data.as_deref() == Some("ok")));

    // Paused ticker and external ticker refuse pgq.ticker(queue).
    pgq_core::pause_queue(&mut conn, &qn).await.unwrap();
    let e = pgq_core::ticker_queue(pool, &qn).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TickerDisabled, "{e}");
    pgq_core::resume_queue(&mut conn, &qn).await.unwrap();
    assert!(pgq_core::tick_now(&mut conn, &qn).await.unwrap().is_some());

    // No ticks: register on a queue whose ticks are gone.
    let (q2, _) = setup(pool, "tickless", "c").await;
    pgq_core::sqlx::query("delete from pgq.tick where tick_queue = (select queue_id from pgq.queue where queue_name = 'tickless')")
        .execute(pool)
        .await
        .unwrap();
    let e = pgq_core::register_consumer(pool, &q2, &c("new"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoTicks, "{e}");
    assert!(e.to_string().contains("ticker"), "says what to do: {e}");

    // Retrying an event that is not in the batch.
    tick(pool, &qn).await;
    let b = crate::common::batch(pool, &qn, &cn).await;
    let e = pgq_core::event_retry(
        pool,
        b,
        pgq_core::EventId(123_456),
        std::time::Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EventNotFound, "{e}");
}

#[tokio::test]
async fn bad_values_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (qn, cn) = setup(pool, "bad", "c").await;
    let before = pgq_core::get_queue_config(pool, &qn).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();

    for cfg in [
        QueueConfig {
            ticker_max_count: Some(0),
            ..Default::default()
        },
        QueueConfig {
            ticker_max_count: Some(7),
            rotation_period: Some(std::time::Duration::ZERO),
            ..Default::default()
        },
        QueueConfig {
            ticker_max_count: Some(7),
            per_tx_limit: Some(Some(-1)),
            ..Default::default()
        },
    ] {
        let e = pgq_core::set_queue_config(&mut conn, &qn, &cfg)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    assert_eq!(pgq_core::get_queue_config(pool, &qn).await.unwrap(), before);

    // NUL bytes never reach the database, on any path.
    let nul = NewEvent::new("t", "a\0b");
    let e = pgq_core::insert_event(pool, &qn, "t", "a\0b")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = pgq_core::insert_events(pool, &qn, &[NewEvent::new("ok", "ok"), nul.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = pgq_core::insert_event_ext(pool, &qn, &NewEvent::new("t", "d").extra3("x\0"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let mut tx = pool.begin().await.unwrap();
    let e = pgq_core::copy_events(
        &mut tx,
        &qn,
        futures_util::stream::iter([Ok::<_, std::io::Error>(NewEvent::new("ok", "ok")), Ok(nul)]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    tx.rollback().await.unwrap();
    // An explicit time through the writer-level single insert is refused with a pointer.
    let e =
        pgq_core::insert_event_ext(pool, &qn, &NewEvent::new("t", "d").time(chrono::Utc::now()))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    tick(pool, &qn).await;
    assert!(
        crate::common::drain(pool, &qn, &cn).await.is_empty(),
        "nothing was inserted"
    );
}

#[tokio::test]
async fn pgq_missing_is_reported_with_what_to_do() {
    let db = TestDb::new_without_schema().await;
    let e = pgq_core::version(db.pool()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PgqNotInstalled, "{e}");
    assert!(e.to_string().contains("install"), "{e}");
    let e = pgq_core::create_queue(db.pool(), &q("x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PgqNotInstalled, "{e}");
}
