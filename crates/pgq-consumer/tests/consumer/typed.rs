//! Typed consuming: `Event::decode` with the producer's `TypedEvent` contract (in core); a payload
//! that does not decode fails the handler like any error and ends as a dead letter with the
//! reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgq_consumer::{Backoff, HandlerError, handler_fn};
use pgq_core::{DeadLetterFilter, Event, NewEvent, TypedEvent};
use pgq_testkit::TestDb;

use crate::common::{builder, count, queue, run_with_ticker, wait_for};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderPaid {
    id: i64,
    cents: u32,
}

impl TypedEvent for OrderPaid {
    const EVENT_TYPE: &'static str = "order.paid";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_decode_typed_events_and_bad_payloads_become_dead_letters() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "typed").await;
    let consumer = builder(pool, &q, "c")
        .max_retries(1)
        .retry_backoff(Backoff::constant(Duration::ZERO))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let good = OrderPaid { id: 1, cents: 990 };
    let events = [
        good.to_event().unwrap(),
        NewEvent::new("order.paid", r#"{"id":"two"}"#),
        NewEvent::new("order.refunded", r#"{"id":3,"cents":1}"#),
    ];
    pgq_core::insert_events(pool, &q, &events).await.unwrap();

    let decoded: Arc<Mutex<Vec<OrderPaid>>> = Default::default();
    let sink = decoded.clone();
    let handler = handler_fn(move |ev: Event| {
        let sink = sink.clone();
        async move {
            let paid: OrderPaid = ev.decode()?;
            sink.lock().unwrap().push(paid);
            Ok::<_, HandlerError>(())
        }
    });
    let running = run_with_ticker(pool, &q, &consumer, handler);
    wait_for("two dead letters", || async {
        count(pool, "select count(*) from pgq_rs.dead_letter").await == 2
    })
    .await;
    running.stop().await;

    assert_eq!(*decoded.lock().unwrap(), [good]);
    let mut dead = pgq_core::list_dead_letters(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    dead.sort_by_key(|d| d.ev_id);
    assert_eq!(dead[0].retry, 1, "retried like any failure");
    assert!(
        dead[0].reason.contains("the payload does not decode"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[1]
            .reason
            .contains("expected event type \"order.paid\", found Some(\"order.refunded\")"),
        "{}",
        dead[1].reason
    );
}
