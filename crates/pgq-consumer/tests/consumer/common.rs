//! Helpers shared by the consumer tests.

use std::time::Duration;

use pgq_consumer::{Consumer, ConsumerBuilder};
use pgq_core::sqlx::PgPool;
use pgq_core::{NewEvent, QueueName};
use tokio_util::sync::CancellationToken;

pub(crate) use pgq_testkit::{c, q, wait_for};

/// Create `queue`; the consumer registers itself.
pub(crate) async fn queue(pool: &PgPool, name: &str) -> QueueName {
    let qn = q(name);
    assert!(pgq_core::create_queue(pool, &qn).await.unwrap());
    qn
}

pub(crate) fn builder(pool: &PgPool, queue: &QueueName, consumer: &str) -> ConsumerBuilder {
    Consumer::builder(pool.clone(), queue.clone(), c(consumer))
}

/// Insert events with payloads `from..to` (type "t") in one transaction.
pub(crate) async fn produce(pool: &PgPool, queue: &QueueName, from: u64, to: u64) {
    let events: Vec<NewEvent> = (from..to)
        .map(|i| NewEvent::new("t", i.to_string()))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    pgq_core::insert_events(&mut *tx, queue, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// One forced tick in its own transaction.
pub(crate) async fn tick(pool: &PgPool, queue: &QueueName) {
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, queue).await.unwrap();
}

/// The retry step and a tick, as a ticker does.
pub(crate) async fn retry_step_and_tick(pool: &PgPool, queue: &QueueName) {
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::maint_retry_events_all(&mut conn).await.unwrap();
    drop(conn);
    tick(pool, queue).await;
}

/// A stand-in ticker (the ticker crate is separate): the retry step and a tick every 50 ms
/// until the returned token is cancelled.
pub(crate) fn ticker(pool: &PgPool, queue: &QueueName) -> CancellationToken {
    let stop = CancellationToken::new();
    let (pool, queue, token) = (pool.clone(), queue.clone(), stop.clone());
    tokio::spawn(async move {
        while !token.is_cancelled() {
            if let Ok(mut conn) = pool.acquire().await {
                let _ = pgq_core::maint_retry_events_all(&mut conn).await;
                let _ = pgq_core::tick_now(&mut conn, &queue).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stop
}

/// `count(*)` of a query.
pub(crate) async fn count(pool: &PgPool, sql: &str) -> i64 {
    pgq_core::sqlx::query_scalar(pgq_core::sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Run `sql` (test fixtures only).
pub(crate) async fn exec(pool: &PgPool, sql: &str) {
    pgq_core::sqlx::raw_sql(pgq_core::sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

/// A consumer's run loop in a task of its own, beside a stand-in ticker on its queue.
pub(crate) struct Running {
    shutdown: CancellationToken,
    ticker: CancellationToken,
    join: tokio::task::JoinHandle<pgq_consumer::Result<()>>,
}

/// Start `consumer.run(handler)` and a stand-in ticker for `queue`.
pub(crate) fn run_with_ticker<H: pgq_consumer::Handler + 'static>(
    pool: &PgPool,
    queue: &QueueName,
    consumer: &Consumer,
    handler: H,
) -> Running {
    let ticker = ticker(pool, queue);
    let shutdown = CancellationToken::new();
    let join = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    Running {
        shutdown,
        ticker,
        join,
    }
}

impl Running {
    /// Drop the loop without a clean stop (as a crash would leave it), and stop the ticker.
    pub(crate) async fn abort(self) {
        self.join.abort();
        match self.join.await {
            Err(e) => assert!(e.is_cancelled(), "the run loop's task panicked: {e}"),
            Ok(r) => panic!("the run loop ended by itself: {r:?}"),
        }
        self.ticker.cancel();
    }

    /// Stop the loop (it must end cleanly, without panicking) and the ticker.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.join
            .await
            .expect("the run loop's task did not panic")
            .expect("the run loop ended cleanly");
        self.ticker.cancel();
    }
}
