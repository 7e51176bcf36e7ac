use pgq_core::sqlx::PgPool;
use pgq_core::{BatchId, ConsumerName, Event, QueueName, TickId};

pub(crate) use pgq_testkit::{c, q};

/// Create `queue` and register `consumer` on it.
pub(crate) async fn setup(pool: &PgPool, queue: &str, consumer: &str) -> (QueueName, ConsumerName) {
    let (qn, cn) = (q(queue), c(consumer));
    assert!(pgq_core::create_queue(pool, &qn).await.unwrap());
    assert!(pgq_core::register_consumer(pool, &qn, &cn).await.unwrap());
    (qn, cn)
}

/// One forced tick in its own transaction.
pub(crate) async fn tick(pool: &PgPool, queue: &QueueName) -> TickId {
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, queue)
        .await
        .unwrap()
        .expect("queue ticks")
}

/// Read every open batch to the end, finishing each; returns all events.
pub(crate) async fn drain(pool: &PgPool, queue: &QueueName, consumer: &ConsumerName) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(b) = pgq_core::next_batch(pool, queue, consumer).await.unwrap() {
        all.extend(pgq_core::get_batch_events(pool, b).await.unwrap());
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    all.sort_by_key(|e| e.ev_id);
    all
}

/// The next batch, which must exist.
pub(crate) async fn batch(pool: &PgPool, queue: &QueueName, consumer: &ConsumerName) -> BatchId {
    pgq_core::next_batch(pool, queue, consumer)
        .await
        .unwrap()
        .expect("a batch")
}
