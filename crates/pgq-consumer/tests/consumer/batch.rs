//! The low-level layer: batches, the finish guard, ownership, retries, filters, registration.

use std::time::Duration;

use futures_util::TryStreamExt;
use pgq_consumer::{ErrorKind, Registration};
use pgq_core::{EventFilter, NewEvent, TickId};
use pgq_testkit::TestDb;

use crate::common::{builder, c, produce, queue, retry_step_and_tick, tick};

fn payloads(events: &[pgq_core::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.ev_data.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_batch_reads_in_chunks_and_finishes() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "chunks").await;
    let consumer = builder(pool, &q, "c").fetch_size(3).build().unwrap();
    assert!(consumer.register().await.unwrap());
    assert!(
        !consumer.register().await.unwrap(),
        "registering twice is a no-op"
    );
    produce(pool, &q, 0, 10).await;
    tick(pool, &q).await;

    let mut conn = pool.acquire().await.unwrap();
    let mut batch = consumer
        .next_batch(&mut conn)
        .await
        .unwrap()
        .expect("a batch");
    let mut seen = Vec::new();
    loop {
        let chunk = batch.next_chunk().await.unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 3);
        seen.extend(payloads(&chunk));
    }
    assert_eq!(seen, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    let summary = batch.finish().await.unwrap();
    assert_eq!(summary.events, 10);
    assert!(consumer.next_batch(&mut conn).await.unwrap().is_none());
}

#[tokio::test]
async fn a_partly_read_batch_is_not_finished_by_accident() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "guard").await;
    let consumer = builder(pool, &q, "c").fetch_size(2).build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    tick(pool, &q).await;

    let mut conn = pool.acquire().await.unwrap();
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let id = batch.id();
    let first = batch.next_event().await.unwrap().unwrap();
    assert_eq!(first.ev_data.as_deref(), Some("0"));
    assert!(!batch.can_finish());
    let e = batch.finish().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFullyRead, "{e}");
    // Refused: nothing was finished, the same batch comes again.
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(batch.id(), id);
    let again = batch.next_event().await.unwrap().unwrap();
    assert_eq!(again.ev_data.as_deref(), Some("0"));
    let second = batch.next_event().await.unwrap().unwrap();
    assert_eq!(second.ev_data.as_deref(), Some("1"));
    batch.skip_rest();
    assert!(batch.can_finish());
    let summary = batch.finish().await.unwrap();
    assert!(summary.skipped_rest);
    assert_eq!(summary.events, 2);
    let info = pgq_core::get_consumer_info(pool, &q, &c("c"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.current_batch, None, "batch {id} finished");

    // retry_rest: the unread events come back later with ev_retry = 1.
    produce(pool, &q, 10, 14).await;
    tick(pool, &q).await;
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    batch.next_event().await.unwrap().unwrap();
    assert!(!batch.can_finish());
    assert_eq!(batch.retry_rest(Duration::ZERO).await.unwrap(), 3);
    assert_eq!(batch.finish().await.unwrap().retried, 3);
    retry_step_and_tick(pool, &q).await;
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let back: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(payloads(&back), ["11", "12", "13"]);
    assert!(back.iter().all(|e| e.ev_retry == Some(1)));
    batch.finish().await.unwrap();
}

#[tokio::test]
async fn a_dropped_or_abandoned_batch_comes_again() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "again").await;
    let consumer = builder(pool, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 3).await;
    tick(pool, &q).await;
    let mut conn = pool.acquire().await.unwrap();

    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let id = batch.id();
    batch.next_event().await.unwrap();
    batch.abandon().await.unwrap();
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(batch.id(), id);
    let all: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(all.len(), 3);
    drop(batch);
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(batch.id(), id, "dropping rolls back too");
    let all: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(all.len(), 3);
    batch.finish().await.unwrap();
    assert!(consumer.next_batch(&mut conn).await.unwrap().is_none());
}

#[tokio::test]
async fn a_foreign_batch_id_is_refused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "mine").await;
    let other_q = queue(pool, "theirs").await;
    let mine = builder(pool, &q, "a").build().unwrap();
    let theirs = builder(pool, &q, "b").build().unwrap();
    let elsewhere = builder(pool, &other_q, "a").build().unwrap();
    for consumer in [&mine, &theirs, &elsewhere] {
        consumer.register().await.unwrap();
    }
    produce(pool, &q, 0, 2).await;
    produce(pool, &other_q, 0, 2).await;
    tick(pool, &q).await;
    tick(pool, &other_q).await;

    let mut conn = pool.acquire().await.unwrap();
    let b_batch = theirs.next_batch(&mut conn).await.unwrap().unwrap();
    let b_id = b_batch.id();
    drop(b_batch);
    let mut conn2 = pool.acquire().await.unwrap();
    let e = mine.open_batch(&mut conn2, b_id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForeignBatch, "{e}");
    assert!(e.to_string().contains("\"b\""), "{e}");

    let x = elsewhere.next_batch(&mut conn).await.unwrap().unwrap();
    let x_id = x.id();
    drop(x);
    let e = mine.open_batch(&mut conn2, x_id).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::ForeignBatch,
        "same consumer name, other queue"
    );

    let e = mine
        .open_batch(&mut conn2, pgq_core::BatchId(i64::MAX))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::BatchNotFound),
        "{e}"
    );

    // Its own batch by id works, and finishes.
    let own = mine.next_batch(&mut conn).await.unwrap().unwrap();
    let own_id = own.id();
    drop(own);
    let mut reopened = mine.open_batch(&mut conn2, own_id).await.unwrap();
    let evs: Vec<_> = reopened.events().try_collect().await.unwrap();
    assert_eq!(evs.len(), 2);
    reopened.finish().await.unwrap();
}

#[tokio::test]
async fn retried_events_come_back_with_ev_retry_plus_one() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "retry").await;
    let consumer = builder(pool, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 6).await;
    tick(pool, &q).await;
    let mut conn = pool.acquire().await.unwrap();

    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    while let Some(ev) = batch.next_event().await.unwrap() {
        if ev.ev_data.as_deref().unwrap().parse::<u32>().unwrap() % 2 == 0 {
            batch.retry(&ev, Duration::ZERO);
        }
    }
    assert_eq!(batch.pending_retries(), 3);
    assert_eq!(batch.finish().await.unwrap().retried, 3);
    // Not before the retry step and a tick.
    tick(pool, &q).await;
    let mut b = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(b.events().try_collect::<Vec<_>>().await.unwrap().len(), 0);
    b.finish().await.unwrap();

    retry_step_and_tick(pool, &q).await;
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let mut back: Vec<_> = batch.events().try_collect().await.unwrap();
    back.sort_by_key(|e| e.ev_id);
    assert_eq!(payloads(&back), ["0", "2", "4"]);
    assert!(back.iter().all(|e| e.ev_retry == Some(1)), "{back:?}");
    // Retried again: ev_retry 2.
    for ev in &back {
        batch.retry(ev, Duration::ZERO);
    }
    batch.finish().await.unwrap();
    retry_step_and_tick(pool, &q).await;
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let again: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|e| e.ev_retry == Some(2)));
    batch.finish().await.unwrap();
}

#[tokio::test]
async fn a_reader_only_role_consumes_and_retries() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "least").await;
    let role = db.create_role("reader", "pgq_reader", None).await;
    let reader = db.pool_as(&role).await;
    let consumer = builder(&reader, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 2).await;
    tick(pool, &q).await;
    let mut conn = reader.acquire().await.unwrap();
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let first = batch.next_event().await.unwrap().unwrap();
    batch.retry(&first, Duration::ZERO);
    while batch.next_event().await.unwrap().is_some() {}
    assert_eq!(batch.finish().await.unwrap().retried, 1);
    retry_step_and_tick(pool, &q).await;
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    let back: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].ev_id, first.ev_id);
    batch.finish().await.unwrap();
}

#[tokio::test]
async fn typed_filters_deliver_only_matching_events() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "filters").await;
    let by_type = builder(pool, &q, "by_type")
        .event_types(["keep", "also'; drop table x; --"])
        .build()
        .unwrap();
    let by_table = builder(pool, &q, "by_table")
        .tables(["public.orders"])
        .build()
        .unwrap();
    let by_both = builder(pool, &q, "by_both")
        .filter(EventFilter {
            ev_types: vec!["keep".into()],
            extra2: vec!["x".into()],
            ..Default::default()
        })
        .build()
        .unwrap();
    for consumer in [&by_type, &by_table, &by_both] {
        consumer.register().await.unwrap();
    }
    let events = [
        NewEvent::new("keep", "1")
            .extra1("public.orders")
            .extra2("x"),
        NewEvent::new("drop", "2").extra1("public.orders"),
        NewEvent::new("keep", "3").extra1("public.other"),
        NewEvent::new("also'; drop table x; --", "4"),
    ];
    pgq_core::insert_events(pool, &q, &events).await.unwrap();
    tick(pool, &q).await;

    let mut conn = pool.acquire().await.unwrap();
    for (consumer, expected) in [
        (&by_type, vec!["1", "3", "4"]),
        (&by_table, vec!["1", "2"]),
        (&by_both, vec!["1"]),
    ] {
        let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
        let got: Vec<_> = batch.events().try_collect().await.unwrap();
        assert_eq!(payloads(&got), expected, "{}", consumer.name());
        batch.finish().await.unwrap();
        // Filtered-out events are passed over for good.
        assert!(consumer.next_batch(&mut conn).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn registration_at_a_tick_or_at_another_consumers_position() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "reg").await;
    let first = builder(pool, &q, "first").build().unwrap();
    first.register().await.unwrap();
    produce(pool, &q, 0, 2).await;
    tick(pool, &q).await;
    let start: TickId = pgq_core::get_consumer_info(pool, &q, &c("first"))
        .await
        .unwrap()
        .unwrap()
        .last_tick
        .unwrap();

    // A copy of `first`'s position sees the same pending events.
    let copy = builder(pool, &q, "copy")
        .registration(Registration::AtConsumer(c("first")))
        .build()
        .unwrap();
    assert!(copy.register().await.unwrap());
    let at_tick = builder(pool, &q, "at_tick")
        .registration(Registration::AtTick(start))
        .build()
        .unwrap();
    assert!(at_tick.register().await.unwrap());
    let latest = builder(pool, &q, "latest").build().unwrap();
    latest.register().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    for (consumer, n) in [(&first, 2), (&copy, 2), (&at_tick, 2)] {
        let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
        let got: Vec<_> = batch.events().try_collect().await.unwrap();
        assert_eq!(got.len(), n, "{}", consumer.name());
        batch.finish().await.unwrap();
    }
    assert!(latest.next_batch(&mut conn).await.unwrap().is_none());

    let missing = builder(pool, &q, "x")
        .registration(Registration::AtConsumer(c("nobody")))
        .build()
        .unwrap();
    assert_eq!(
        missing.register().await.unwrap_err().kind(),
        ErrorKind::Config
    );
    let existing = builder(pool, &q, "y")
        .registration(Registration::Existing)
        .build()
        .unwrap();
    assert!(!existing.register().await.unwrap());
    let e = existing.next_batch(&mut conn).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::ConsumerNotRegistered),
        "{e}"
    );
}

#[tokio::test]
async fn a_batch_inside_the_callers_transaction_commits_with_it() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "outer").await;
    let consumer = builder(pool, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 2).await;
    tick(pool, &q).await;
    crate::common::exec(pool, "create table seen (v text)").await;

    // Rolled back with the caller's transaction: the batch comes again.
    let mut tx = pool.begin().await.unwrap();
    let mut batch = consumer.next_batch(&mut tx).await.unwrap().unwrap();
    let ticks = (batch.info().prev_tick_id, batch.info().cur_tick_id);
    while let Some(ev) = batch.next_event().await.unwrap() {
        pgq_core::sqlx::query("insert into seen values ($1)")
            .bind(ev.ev_data)
            .execute(batch.conn())
            .await
            .unwrap();
    }
    batch.finish().await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        crate::common::count(pool, "select count(*) from seen").await,
        0
    );

    let mut tx = pool.begin().await.unwrap();
    let mut batch = consumer.next_batch(&mut tx).await.unwrap().unwrap();
    // The batch id was handed out in the rolled-back transaction too; the ticks are the same.
    assert_eq!((batch.info().prev_tick_id, batch.info().cur_tick_id), ticks);
    while let Some(ev) = batch.next_event().await.unwrap() {
        pgq_core::sqlx::query("insert into seen values ($1)")
            .bind(ev.ev_data)
            .execute(batch.conn())
            .await
            .unwrap();
    }
    batch.finish().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        crate::common::count(pool, "select count(*) from seen").await,
        2
    );
    let mut conn = pool.acquire().await.unwrap();
    assert!(consumer.next_batch(&mut conn).await.unwrap().is_none());
}

/// A consumer several ticks behind takes them in one batch (P9: one batch per tick while a held
/// horizon makes every batch dearer was how the consumer fell behind for good), and the batch's
/// updates find the subscription row through its place (no walk over its old versions).
#[tokio::test]
async fn a_consumer_behind_takes_every_pending_tick_in_one_batch() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "behind").await;
    let consumer = builder(pool, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    for i in 0..4 {
        produce(pool, &q, i * 3, i * 3 + 3).await;
        tick(pool, &q).await;
    }
    let newest: i64 = sqlx_scalar(pool, "select max(tick_id) from pgq.tick").await;
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(
        batch.info().cur_tick_id,
        TickId::from(newest),
        "one batch to the newest tick"
    );
    let events: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(events.len(), 12);
    batch.finish().await.unwrap();
    assert!(consumer.next_batch(&mut conn).await.unwrap().is_none());
    // Batch conditions keep pgq's own next_batch_custom.
    let tuned = builder(pool, &q, "tuned").min_count(1).build().unwrap();
    tuned.register().await.unwrap();
    produce(pool, &q, 100, 101).await;
    tick(pool, &q).await;
    assert!(tuned.next_batch(&mut conn).await.unwrap().is_some());
}

async fn sqlx_scalar(pool: &pgq_core::sqlx::PgPool, sql: &'static str) -> i64 {
    pgq_core::sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}
