//! A consumer with the run loop: a per-event handler, retries with backoff, durable dead letters,
//! wakeups on new ticks, and a clean shutdown.
//!
//! Uses `DATABASE_URL` when set; otherwise starts a private PostgreSQL cluster with
//! `pgq-testkit`. Run: `cargo run --example consume`.

mod common;

use std::time::Duration;

use pgq::consumer::{Backoff, CancellationToken, Consumer, HandlerError, handler_fn};
use pgq::core::{self as core, ConsumerName, DeadLetterFilter, Event, NewEvent, QueueName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = common::database().await?;
    let pool = db.pool.clone();
    core::install(&pool).await?;
    let queue = QueueName::new("example_orders")?;
    core::create_queue(&pool, &queue).await?;

    let consumer = Consumer::builder(pool.clone(), queue.clone(), ConsumerName::new("mailer")?)
        .event_types(["order.created"]) // a typed filter: other types are passed over
        .max_retries(2) // then it is a dead letter (table pgq_rs.dead_letter)
        .retry_backoff(Backoff::constant(Duration::from_millis(100)))
        .build()?;
    consumer.register().await?;

    // Stand-in for pgq-ticker / pgqd: the retry step and a tick every 200 ms. Each tick wakes
    // the consumer at once through LISTEN/NOTIFY.
    let stop = CancellationToken::new();
    let ticker = tokio::spawn({
        let (pool, queue, stop) = (pool.clone(), queue.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                let mut conn = pool.acquire().await?;
                core::maint_retry_events_all(&mut conn).await?;
                core::tick_now(&mut conn, &queue).await?;
                drop(conn);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
    });

    let events: Vec<NewEvent> = (1..=5)
        .map(|i| NewEvent::new("order.created", format!(r#"{{"order":{i}}}"#)))
        .chain([NewEvent::new("order.audited", "{}")])
        .collect();
    core::insert_events(&pool, &queue, &events).await?;
    println!("produced 5 order.created events and 1 order.audited event");

    // Order 3 always fails: it is retried twice, then dead-lettered.
    let handler = handler_fn(|ev: Event| async move {
        let data = ev.ev_data.unwrap_or_default();
        if data.contains(":3") {
            println!(
                "  event {} {data}: failing (retry {})",
                ev.ev_id,
                ev.ev_retry.unwrap_or(0)
            );
            return Err(HandlerError::new(format!("no mail address for {data}")));
        }
        println!("  event {} {data}: mail sent", ev.ev_id);
        Ok(())
    });
    let run = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(handler, stop).await }
    });

    // Dead letters are rows of pgq_rs.dead_letter (`pgq dlq list`): they stay until replayed
    // or purged, whatever rotates.
    let only_ours = DeadLetterFilter {
        queue: Some(queue.clone()),
        ..Default::default()
    };
    let mut dead = Vec::new();
    while dead.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dead = core::list_dead_letters(&pool, &only_ours).await?;
    }
    stop.cancel();
    run.await??;
    ticker.await??;
    println!("consumer stopped cleanly");
    for dl in &dead {
        println!(
            "dead letter {}: {} after {} retries: {}",
            dl.id,
            dl.data.as_deref().unwrap_or_default(),
            dl.retry,
            dl.reason
        );
    }
    assert_eq!(dead.len(), 1, "order 3 is the one dead letter");
    // Put it back into the queue (a new event; it would fail again here, so purge it instead).
    let purged =
        core::purge_dead_letters(&pool, &core::DeadLetterSelection::All, Some(&queue), None)
            .await?;
    println!("purged {} dead letter(s)", purged.len());
    Ok(())
}
