//! The README's demo. Part 1: a queue step by step (create, produce, tick, consume), printing what
//! happens. Part 2: live for a few seconds — `pgq-ticker` (in process), a producer sending single
//! events in their own transactions, and a consumer woken by tick notifications — printing
//! throughput and end-to-end latency each second.
//!
//! Uses `DATABASE_URL` when set (the role must be able to `CREATE EXTENSION pgq` the first time);
//! otherwise starts a private PostgreSQL cluster with `pgq-testkit`. Run it with `scripts/demo`.

mod common;

use futures_util::TryStreamExt;
use pgq::core::sqlx::PgPool;
use pgq::core::{self as core, ConsumerName, NewEvent, QueueName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keeps a private database alive for the whole demo when no DATABASE_URL is given.
    let db = common::database().await?;
    let pool = db.pool.clone();

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
            info.consumer_name,
            info.lag.unwrap_or_default(),
            info.pending_events
        );
    }
    core::unregister_consumer(&pool, &queue, &consumer).await?;
    core::drop_queue(&pool, &queue, false).await?;
    println!("cleaned up: consumer unregistered, queue dropped.");

    live(&pool, &db.url).await?;
    println!("Demo done.");
    Ok(())
}

fn micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Part 2: ticker + producer + consumer, live.
async fn live(pool: &PgPool, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use clap::Parser as _;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const SECONDS: u64 = 5;
    const RATE: u64 = 200; // events per second

    println!();
    println!(
        "live: pgq-ticker + producer ({RATE} ev/s, one transaction each) + consumer, {SECONDS} s"
    );
    let queue = QueueName::new("demo_live")?;
    core::create_queue(pool, &queue).await?;
    // ticker_max_lag = 0: pgq-ticker ticks this queue within milliseconds of a commit.
    let cfg = core::QueueConfig {
        ticker_max_lag: Some(Duration::ZERO),
        ..Default::default()
    };
    core::set_queue_config(&mut *pool.acquire().await?, &queue, &cfg).await?;

    let stop = pgq::consumer::CancellationToken::new();
    let args = pgq::ticker::Args::parse_from(["pgq-ticker", "--db", url]);
    let ticker_cfg = pgq::ticker::Config::from_args(&args)?;
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let ticker = tokio::spawn(pgq::ticker::run(ticker_cfg, reload_rx, stop.clone()));

    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let consumer = pgq::consumer::Consumer::builder(
        pool.clone(),
        queue.clone(),
        ConsumerName::new("demo_live")?,
    )
    .poll_interval(Duration::from_secs(1))
    .build()?;
    let consumed = {
        let (latencies, stop) = (latencies.clone(), stop.clone());
        tokio::spawn(async move {
            let handler = pgq::consumer::handler_fn(move |ev: pgq::Event| {
                let latencies = latencies.clone();
                async move {
                    let sent: i64 = ev.ev_data.as_deref().unwrap_or("0").parse().unwrap_or(0);
                    let ms = (micros_now() - sent) as f64 / 1000.0;
                    latencies.lock().unwrap().push(ms);
                    Ok::<_, pgq::consumer::HandlerError>(())
                }
            });
            consumer.run(handler, stop).await
        })
    };
    // Give the consumer a moment to register before producing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let producer = pgq::producer::Producer::new(queue.clone());
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut sent_total = 0u64;
    for second in 1..=SECONDS {
        for _ in 0..RATE {
            interval.tick().await;
            producer
                .send(pool, &NewEvent::new("demo.tick", micros_now().to_string()))
                .await?;
            sent_total += 1;
        }
        let mut window: Vec<f64> = std::mem::take(&mut *latencies.lock().unwrap());
        window.sort_by(f64::total_cmp);
        println!(
            "  second {second}: produced {RATE}, consumed {:4}, latency p50 {:6.2} ms  p99 {:6.2} ms",
            window.len(),
            percentile(&window, 0.5),
            percentile(&window, 0.99)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    consumed.await??;
    ticker.await??;
    let info = core::get_consumer_info(pool, &queue, &ConsumerName::new("demo_live")?).await?;
    println!(
        "live: {sent_total} events produced; the consumer's position is {} old, {} events pending",
        info.as_ref()
            .and_then(|i| i.lag)
            .map(|l| format!("{l:?}"))
            .unwrap_or_default(),
        info.map(|i| i.pending_events).unwrap_or_default()
    );
    Ok(())
}
