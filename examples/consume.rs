//! A consumer with the run loop: a per-event handler, retries with backoff, a dead-letter queue,
//! wakeups on new ticks, and a clean shutdown.
//!
//! Uses `DATABASE_URL` when set; otherwise starts a private PostgreSQL cluster with
//! `pgq-testkit`. Run: `cargo run --example consume`.

mod common;

use std::time::Duration;

use pgq::consumer::{
    Backoff, CancellationToken, Consumer, DeadLetterMeta, HandlerError, handler_fn,
};
use pgq::core::{self as core, ConsumerName, Event, NewEvent, QueueName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = common::database().await?;
    let pool = db.pool.clone();
    core::install(&pool).await?;
    let queue = QueueName::new("example_orders")?;
    core::create_queue(&pool, &queue).await?;

    let consumer = Consumer::builder(pool.clone(), queue.clone(), ConsumerName::new("mailer")?)
        .event_types(["order.created"]) // a typed filter: other types are passed over
        .max_retries(2) // then the event goes to the queue example_orders_dlq
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

    // The dead-letter queue is named after the queue; read it with a consumer of its own.
    let dlq = QueueName::new("example_orders_dlq")?;
    let reader = ConsumerName::new("example_reader")?;
    core::create_queue(&pool, &dlq).await?;
    core::register_consumer(&pool, &dlq, &reader).await?;

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

    let mut dead = Vec::new();
    while dead.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        core::tick_now(&mut *pool.acquire().await?, &dlq).await?;
        while let Some(batch) = core::next_batch(&pool, &dlq, &reader).await? {
            dead.extend(core::get_batch_events(&pool, batch).await?);
            core::finish_batch(&pool, batch).await?;
        }
    }
    stop.cancel();
    run.await??;
    ticker.await??;
    println!("consumer stopped cleanly");
    for ev in dead {
        let meta = DeadLetterMeta::from_event(&ev).expect("dead-letter metadata");
        println!(
            "dead letter: {} after {} retries: {}",
            ev.ev_data.unwrap_or_default(),
            meta.retries,
            meta.reason
        );
    }
    Ok(())
}
