//! Durable dead letters: the default destination is the table `pgq_rs.dead_letter`, written in
//! the batch's transaction, complete (NULL stays NULL, extras kept), readable by a `pgq_reader`
//! consumer, and untouched by any number of table rotations. A dead-letter queue nobody reads is
//! refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgq_consumer::{Backoff, DeadLetter, Delivery, ErrorKind, HandlerError, handler_fn};
use pgq_core::sqlx::{Executor, PgPool};
use pgq_core::{DeadLetterFilter, Event, QueueName};
use pgq_testkit::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{builder, c, count, exec, queue, run_with_ticker, wait_for};

#[derive(Debug)]
struct Refused(i64);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused event {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Three events: a good one, a bad one with every field set, a bad one with NULL type and data.
async fn produce_mixed(pool: &PgPool, q: &QueueName) {
    let sql = format!(
        "select pgq.insert_event({q}, 'good', 'g', null, null, null, null); \
         select pgq.insert_event({q}, 'bad', 'b', 'x1', 'x2', 'x3', 'x4'); \
         select pgq.insert_event({q}, null, null, 'only-extra1', null, null, null);",
        q = pgq_core::quote_literal(q.as_str())
    );
    exec(pool, &sql).await;
}

/// Runs `consumer` with a handler that accepts only type `good`, until `expected` dead letters
/// exist; returns how many times the handler ran for each event id (1, 2, 3 in order).
async fn run_until_dead_letters(
    pool: &PgPool,
    q: &QueueName,
    consumer: pgq_consumer::Consumer,
    expected: i64,
) -> [u32; 3] {
    consumer.register().await.unwrap();
    produce_mixed(pool, q).await;
    let calls: Arc<[AtomicU32; 3]> = Arc::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ev: Event| {
        let seen = seen.clone();
        async move {
            seen[usize::try_from(ev.ev_id - 1).unwrap()].fetch_add(1, Ordering::SeqCst);
            if ev.ev_type.as_deref() == Some("good") {
                Ok(())
            } else {
                Err(HandlerError::from(Refused(ev.ev_id)))
            }
        }
    });
    let running = run_with_ticker(pool, q, &consumer, handler);
    wait_for("the dead letters", || async {
        count(pool, "select count(*) from pgq_rs.dead_letter").await >= expected
    })
    .await;
    running.stop().await;
    [0, 1, 2].map(|i| calls[i].load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_dead_letters_are_rows_that_outlive_any_number_of_rotations() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "dq").await;
    let consumer = builder(pool, &q, "c")
        .max_retries(1)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let calls = run_until_dead_letters(pool, &q, consumer, 2).await;
    // good once, each bad one twice (first delivery and one retry).
    assert_eq!(calls, [1, 2, 2]);

    let mut rows = pgq_core::list_dead_letters(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    rows.sort_by_key(|r| r.ev_id);
    let (full, nulls) = (&rows[0], &rows[1]);
    assert_eq!((full.queue.as_str(), full.consumer.as_str()), ("dq", "c"));
    assert_eq!(full.ev_type.as_deref(), Some("bad"));
    assert_eq!(full.data.as_deref(), Some("b"));
    assert_eq!(
        [&full.extra1, &full.extra2, &full.extra3, &full.extra4].map(|x| x.as_deref()),
        [Some("x1"), Some("x2"), Some("x3"), Some("x4")]
    );
    assert_eq!(full.retry, 1);
    assert_eq!(full.reason, format!("refused event {}", full.ev_id));
    assert!(full.txid.is_some());
    assert_eq!(nulls.ev_type, None, "a NULL type stays NULL");
    assert_eq!(
        nulls.data, None,
        "NULL data stays NULL, not an empty string"
    );
    assert_eq!(nulls.extra1.as_deref(), Some("only-extra1"));
    assert_eq!(nulls.extra4, None);
    // Newest first.
    let listed = pgq_core::list_dead_letters(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert!(listed[0].id > listed[1].id);

    // The queue's event tables rotate freely once nobody is registered on it: a dead letter in
    // a pgq queue would be truncated; the table keeps them.
    pgq_core::unregister_consumer(pool, &q, &c("c"))
        .await
        .unwrap();
    exec(
        pool,
        "select pgq.set_queue_config('dq', 'rotation_period', '0')",
    )
    .await;
    let mut conn = pool.acquire().await.unwrap();
    for _ in 0..4 {
        pgq_core::tick_now(&mut conn, &q).await.unwrap();
        pgq_core::maint_rotate_tables_step1(&mut *conn, &q)
            .await
            .unwrap();
        pgq_core::maint_rotate_tables_step2(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    let events_left = count(
        pool,
        "select count(*) from pgq.event_1 where ev_type = 'bad' or ev_type is null",
    )
    .await;
    assert_eq!(events_left, 0, "the rotations truncated the source queue");
    let after = pgq_core::list_dead_letters(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(after, listed, "dead letters are untouched by rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_only_consumer_writes_dead_letters_in_exactly_once_mode() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "dq_reader").await;
    let role = format!("{}_dl_reader", db.name());
    pool.execute(pgq_core::sqlx::AssertSqlSafe(format!(
        "create role {r} login; grant pgq_reader to {r}",
        r = pgq_core::quote_ident(&role)
    )))
    .await
    .unwrap();
    let reader = PgPool::connect(&db.url_as(&role, None)).await.unwrap();
    let consumer = builder(&reader, &q, "c")
        .delivery(Delivery::ExactlyOnce)
        .max_retries(0)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let calls = run_until_dead_letters(pool, &q, consumer, 2).await;
    // max_retries(0): each bad event is handled once. The good one's handler runs again when a
    // failure rolls the batch's transaction back (its writes went with it).
    assert_eq!(calls[1..], [1, 1], "{calls:?}");
    assert!(calls[0] >= 1);
    assert_eq!(
        count(
            pool,
            "select count(*) from pgq_rs.dead_letter where dl_consumer = 'c' and ev_retry = 0"
        )
        .await,
        2
    );
    // Every dead letter once, and the batch finished: nothing left for the consumer.
    assert_eq!(
        count(
            pool,
            "select count(distinct ev_id) from pgq_rs.dead_letter where dl_queue = 'dq_reader'"
        )
        .await,
        2
    );
    // The batches that held them were finished: whatever the consumer gets next (pgq's
    // sequence-based pending count can lag a tick behind, so read the batches) holds none of the
    // three events.
    let c = pgq_core::ConsumerName::new("c").unwrap();
    let mut again = Vec::new();
    while let Some(b) = pgq_core::next_batch(pool, &q, &c).await.unwrap() {
        again.extend(
            pgq_core::get_batch_events(pool, b)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.ev_id),
        );
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    assert!(again.is_empty(), "delivered again: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_without_a_consumer_is_refused_at_start() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "src").await;
    let dlq = queue(pool, "src_dead").await;
    let consumer = builder(pool, &q, "c")
        .dead_letter(DeadLetter::Queue(dlq.clone()))
        .build()
        .unwrap();
    let handler = handler_fn(|_ev: Event| async { Ok::<_, HandlerError>(()) });
    let err = consumer
        .run(handler.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("has no consumer registered"),
        "{err}"
    );
    // A missing queue too.
    let consumer = builder(pool, &q, "c")
        .dead_letter(DeadLetter::Queue(crate::common::q("nowhere")))
        .build()
        .unwrap();
    let err = consumer
        .run(handler.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(
        !pgq_core::queue_exists(pool, &crate::common::q("nowhere"))
            .await
            .unwrap(),
        "the consumer creates no queue"
    );

    // With a reader registered the consumer starts.
    pgq_core::register_consumer(pool, &dlq, &c("dlq_reader"))
        .await
        .unwrap();
    let consumer = builder(pool, &q, "c")
        .dead_letter(DeadLetter::Queue(dlq))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    consumer.run(handler, shutdown).await.unwrap();
}
