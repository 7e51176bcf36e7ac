//! Reading ahead of an open batch (`pgq_core::batch_reach`, `stream_events_beyond`,
//! `extend_batch_at`, `finish_next_batch_at` with a tick reached): what the consumer delivers
//! without writing its row is exactly what the batches after would have held.

use futures_util::TryStreamExt;
use pgq_core::sqlx::{self, PgPool};
use pgq_core::{BatchId, ConsumerName, ErrorKind, Event, QueueName, TickId};

use crate::common::{c, setup, tick};

/// The data of events, in order.
fn data(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.ev_data.clone()).collect()
}

async fn beyond(pool: &PgPool, batch: BatchId, from: TickId, to: TickId) -> Vec<Event> {
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::stream_events_beyond(&mut conn, batch, from, to)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The next batch's events, the batch finished.
async fn take(pool: &PgPool, q: &QueueName, consumer: &ConsumerName) -> Vec<Event> {
    let b = pgq_core::next_batch(pool, q, consumer)
        .await
        .unwrap()
        .expect("a batch");
    let events = pgq_core::get_batch_events(pool, b).await.unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
    events
}

async fn send(pool: &PgPool, q: &QueueName, data: &[&str]) {
    for d in data {
        pgq_core::insert_event(pool, q, "t", d).await.unwrap();
    }
}

/// (sub_last_tick, sub_next_tick, sub_batch) of a consumer.
async fn row(pool: &PgPool, consumer: &str) -> (i64, Option<i64>, Option<i64>) {
    sqlx::query_as(
        "select s.sub_last_tick, s.sub_next_tick, s.sub_batch from pgq.subscription s
           join pgq.consumer c on c.co_id = s.sub_consumer where c.co_name = $1",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reading_ahead_delivers_what_the_next_batches_hold_and_writes_nothing() {
    let db = pgq_testkit::TestDb::new().await;
    let pool = db.pool();
    let (q, ahead) = setup(pool, "reach", "ahead").await;
    let (mirror, other) = (c("mirror"), c("other"));
    for consumer in [&mirror, &other] {
        pgq_core::register_consumer(pool, &q, consumer)
            .await
            .unwrap();
    }
    send(pool, &q, &["e1"]).await;
    let t1 = tick(pool, &q).await;
    // "ahead" opens its batch and keeps it open; "other" retries e1 (its own copy, which only
    // it may see again); "mirror" takes batches as usual.
    let open = pgq_core::next_batch(pool, &q, &ahead)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data(&take(pool, &q, &mirror).await), ["e1"]);
    let b = pgq_core::next_batch(pool, &q, &other)
        .await
        .unwrap()
        .unwrap();
    let e1 = pgq_core::get_batch_events(pool, b).await.unwrap();
    pgq_core::event_retry(pool, b, e1[0].id(), std::time::Duration::ZERO)
        .await
        .unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
    pgq_core::maint_retry_events(pool).await.unwrap();
    send(pool, &q, &["e2", "e3"]).await;
    let t2 = tick(pool, &q).await;
    send(pool, &q, &["e4"]).await;
    let t3 = tick(pool, &q).await;
    let before = row(pool, "ahead").await;

    // One tick at a time: what mirror's batches hold.
    let part = pgq_core::batch_reach(pool, open, t1, 0)
        .await
        .unwrap()
        .expect("a later tick");
    assert_eq!(
        (part.batch_id, part.prev_tick_id, part.cur_tick_id),
        (open, t1, t2)
    );
    let got = beyond(pool, open, t1, t2).await;
    assert_eq!(data(&got), ["e2", "e3"]);
    assert_eq!(got, take(pool, &q, &mirror).await);
    // Spanning: every tick within the events allowed.
    let part = pgq_core::batch_reach(pool, open, t2, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(part.cur_tick_id, t3);
    let got = beyond(pool, open, t2, t3).await;
    assert_eq!(got, take(pool, &q, &mirror).await);
    assert!(
        pgq_core::batch_reach(pool, open, t3, 10_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(row(pool, "ahead").await, before, "nothing written");
    // The retried copy of e1 is other's only.
    assert_eq!(data(&take(pool, &q, &other).await), ["e1", "e2", "e3"]);

    // Before the batch's end, or a batch nobody holds: refused.
    let e = pgq_core::batch_reach(pool, open, TickId::from(t1.get() - 1), 0)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("before its end"), "{e}");
    let e = pgq_core::batch_reach(pool, BatchId::from(999_999), t1, 0)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BatchNotFound, "{e}");
    // Finishing where it reached: not before the batch's end, not at a tick that is not one.
    for bad in [TickId::from(t1.get() - 1), TickId::from(999_999)] {
        let r = pgq_core::finish_next_batch_at(pool, open, &q, &ahead, 0, Some(bad))
            .await
            .unwrap();
        assert!(!r.finished, "{bad:?}: {r:?}");
    }
    assert_eq!(row(pool, "ahead").await, before);
    let r = pgq_core::finish_next_batch_at(pool, open, &q, &ahead, 0, Some(t3))
        .await
        .unwrap();
    assert!(r.finished && r.next.is_none(), "{r:?}");
    assert_eq!(row(pool, "ahead").await, (t3.get(), None, None));
    assert!(
        pgq_core::next_batch(pool, &q, &ahead)
            .await
            .unwrap()
            .is_none(),
        "nothing comes again"
    );
}

#[tokio::test]
async fn an_event_read_ahead_is_retried_once_the_batch_is_extended_over_it() {
    let db = pgq_testkit::TestDb::new().await;
    let pool = db.pool();
    let (q, ahead) = setup(pool, "extend", "ahead").await;
    send(pool, &q, &["e1"]).await;
    let t1 = tick(pool, &q).await;
    send(pool, &q, &["e2"]).await;
    let t2 = tick(pool, &q).await;
    let open = pgq_core::next_batch(pool, &q, &ahead)
        .await
        .unwrap()
        .unwrap();
    let e2 = beyond(pool, open, t1, t2).await;
    assert_eq!(data(&e2), ["e2"]);
    // Not in the batch yet: pgq cannot retry it.
    let e = pgq_core::event_retry(pool, open, e2[0].id(), std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EventNotFound, "{e}");
    // Someone else's batch, or a tick before the end: nothing extended.
    assert!(
        pgq_core::extend_batch_at(pool, open, &q, &c("nobody"), t2)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        pgq_core::extend_batch_at(pool, open, &q, &ahead, TickId::from(t1.get() - 1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        pgq_core::extend_batch_at(pool, open, &q, &ahead, t2)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(row(pool, "ahead").await.1, Some(t2.get()));
    pgq_core::event_retry(pool, open, e2[0].id(), std::time::Duration::ZERO)
        .await
        .unwrap();
    pgq_core::finish_batch(pool, open).await.unwrap();
    pgq_core::maint_retry_events(pool).await.unwrap();
    tick(pool, &q).await;
    assert_eq!(data(&take(pool, &q, &ahead).await), ["e2"], "retried");
}
