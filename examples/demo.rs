//! The README's demo: a queue working end to end (create, produce, tick, consume), printing what
//! happens at each step.
//!
//! Uses `DATABASE_URL` when set (the role must be able to `CREATE EXTENSION pgq` the first time);
//! otherwise starts a private PostgreSQL cluster with `pgq-testkit`. Run it with `scripts/demo`.

use futures_util::TryStreamExt;
use pgq::core::sqlx::PgPool;
use pgq::core::{self as core, ConsumerName, NewEvent, QueueName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep a private database alive for the whole demo when no DATABASE_URL is given.
    let (pool, _private) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            println!("using DATABASE_URL");
            (PgPool::connect(&url).await?, None)
        }
        Err(_) => {
            println!(
                "starting a private PostgreSQL cluster (set DATABASE_URL to use your own) ..."
            );
            let db = pgq_testkit::TestDb::new_without_schema().await;
            println!(
                "  cluster on 127.0.0.1:{}, database {}",
                db.cluster().port(),
                db.name()
            );
            (db.pool().clone(), Some(db))
        }
    };

    let report = core::install(&pool).await?;
    println!(
        "installed: pgq {} and schema version {} ({} migrations applied now)",
        report.pgq_version,
        report.schema_version,
        report.applied.len()
    );

    let queue = QueueName::new("demo_orders")?;
    let consumer = ConsumerName::new("demo_billing")?;
    let created = core::create_queue(&pool, &queue).await?;
    println!(
        "queue {queue}: {}",
        if created { "created" } else { "already there" }
    );
    core::register_consumer(&pool, &queue, &consumer).await?;
    println!("consumer {consumer} registered");

    // Produce three events inside an application transaction, and one in a rolled-back one.
    let mut tx = pool.begin().await?;
    let events: Vec<NewEvent> = (1..=3)
        .map(|i| {
            NewEvent::new(
                "order.created",
                format!(r#"{{"order":{i},"total":{}}}"#, i * 10),
            )
            .extra1("orders")
        })
        .collect();
    let ids = core::insert_events(&mut *tx, &queue, &events).await?;
    tx.commit().await?;
    println!(
        "produced {} events in one transaction (ids {:?})",
        ids.len(),
        ids
    );
    let mut tx = pool.begin().await?;
    core::insert_event(&mut *tx, &queue, "order.created", r#"{"order":99}"#).await?;
    tx.rollback().await?;
    println!("produced 1 event in a transaction that rolled back (it will never be seen)");

    // Nothing is visible before a tick.
    let before = core::next_batch(&pool, &queue, &consumer).await?;
    println!("before a tick, next_batch = {before:?} (events wait for the ticker)");

    let tick = core::tick_now(&mut *pool.acquire().await?, &queue).await?;
    println!("ticked: tick {tick:?} closes the batch (pgq-ticker or pgqd does this in production)");

    let mut conn = pool.acquire().await?;
    let mut total = 0;
    while let Some(batch) = core::next_batch_info(&mut *conn, &queue, &consumer).await? {
        println!(
            "batch {} (ticks {} -> {})",
            batch.batch_id, batch.prev_tick_id, batch.cur_tick_id
        );
        let mut stream =
            core::stream_batch_events(&mut conn, batch.batch_id, &Default::default()).await?;
        while let Some(ev) = stream.try_next().await? {
            total += 1;
            println!(
                "  event {} type={} table={} data={}",
                ev.ev_id,
                ev.ev_type.as_deref().unwrap_or(""),
                ev.ev_extra1.as_deref().unwrap_or(""),
                ev.ev_data.as_deref().unwrap_or("")
            );
        }
        drop(stream);
        core::finish_batch(&mut *conn, batch.batch_id).await?;
        println!("  batch finished");
    }
    println!("consumed {total} events; the rolled-back one never appeared");

    for info in core::get_consumer_info_queue(&pool, &queue).await? {
        println!(
            "consumer {}: lag {:?}, pending events {}",
            info.consumer_name, info.lag, info.pending_events
        );
    }
    core::unregister_consumer(&pool, &queue, &consumer).await?;
    core::drop_queue(&pool, &queue, false).await?;
    println!("cleaned up: consumer unregistered, queue dropped. Demo done.");
    Ok(())
}
