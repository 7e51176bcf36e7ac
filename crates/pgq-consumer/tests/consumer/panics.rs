//! A panicking handler fails its event (retried, then a dead letter) and the service lives on;
//! exactly-once handlers get the batch's transaction from the type system.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgq_consumer::{Backoff, Delivery, ErrorKind, ExactlyOnceHandler, HandlerError, handler_fn};
use pgq_core::sqlx::{self, PgConnection};
use pgq_core::{DeadLetterFilter, Event};
use pgq_testkit::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{builder, count, exec, produce, queue, run_with_ticker, ticker, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_event_and_the_loop_goes_on() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "panics").await;
    let consumer = builder(pool, &q, "c")
        .max_retries(1)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 5).await;
    let handled = Arc::new(AtomicU32::new(0));
    let seen = handled.clone();
    let handler = handler_fn(move |ev: Event| {
        let seen = seen.clone();
        async move {
            if ev.ev_data.as_deref() == Some("2") {
                panic!("bug in the handler for event {}", ev.ev_id);
            }
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    });
    let running = run_with_ticker(pool, &q, &consumer, handler);
    wait_for("the dead letter of the panicking event", || async {
        count(pool, "select count(*) from pgq_rs.dead_letter").await == 1
    })
    .await;
    // Events produced afterwards are still handled: the loop survived.
    produce(pool, &q, 5, 8).await;
    wait_for("the later events", || async {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    running.stop().await;
    let dead = pgq_core::list_dead_letters(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead[0].data.as_deref(), Some("2"));
    assert_eq!(dead[0].retry, 1, "retried like any failure");
    assert!(
        dead[0]
            .reason
            .contains("the handler panicked: bug in the handler"),
        "{}",
        dead[0].reason
    );
}

struct Ledger;

impl ExactlyOnceHandler for Ledger {
    async fn handle(&self, ev: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("insert into ledger (ev_id) values ($1)")
            .bind(ev.ev_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_handlers_get_the_transaction_or_are_refused_at_start() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(pool, "create table ledger (ev_id bigint)").await;
    let q = queue(pool, "eo_typed").await;
    // Built without exactly-once: refused before anything happens.
    let plain = builder(pool, &q, "c").build().unwrap();
    let err = plain
        .run_exactly_once(Ledger, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("Delivery::ExactlyOnce"), "{err}");
    assert_eq!(
        count(
            pool,
            "select count(*) from pgq.consumer where co_name = 'c'"
        )
        .await,
        0,
        "nothing registered"
    );

    let consumer = builder(pool, &q, "c")
        .delivery(Delivery::ExactlyOnce)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 4).await;
    let stop_ticker = ticker(pool, &q);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        async move { consumer.run_exactly_once(Ledger, shutdown).await }
    });
    wait_for("the ledger", || async {
        count(pool, "select count(*) from ledger").await == 4
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    stop_ticker.cancel();
    assert_eq!(
        count(pool, "select count(distinct ev_id) from ledger").await,
        4
    );
}
