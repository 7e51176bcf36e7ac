//! The first service: a transactional outbox, end to end.
//!
//! - `pgq-ticker` (here the library, in-process) is started **before** the schema exists: it
//!   warns and starts ticking within seconds of the install.
//! - The queue is created with its consumer registered (`create_queue_with`), so no event is
//!   missed before the consumer first runs.
//! - Orders are written with a typed `OrderPlaced` event in the same transaction; every tenth
//!   order is rolled back and produces nothing.
//! - An exactly-once consumer decodes the typed event and writes a ledger row in the batch's
//!   transaction. One order's card is always declined: it is retried after 1 s (on time, whatever
//!   the ticker's `retry_period`), then becomes a durable dead letter.
//! - At the end: every committed order is in the ledger exactly once, or a dead letter; nothing
//!   else is anywhere.
//!
//! Uses `DATABASE_URL` when set; otherwise starts a private PostgreSQL cluster with
//! `pgq-testkit`. Run: `cargo run --example outbox`.

mod common;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Parser;
use pgq::consumer::{
    Backoff, CancellationToken, Consumer, Delivery, ExactlyOnceHandler, HandlerError,
};
use pgq::core::sqlx::{self, Connection, PgConnection};
use pgq::core::{self as core, ConsumerName, DeadLetterFilter, Event, QueueConfig, QueueName};
use pgq::producer::{Extras, Producer, TypedEvent};

/// The event the order service publishes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    cents: i64,
}

impl TypedEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order.placed";
    fn extras(&self) -> Extras {
        Extras {
            extra1: Some(self.customer.clone()),
            ..Default::default()
        }
    }
}

/// The order whose card is always declined.
const DECLINED: i64 = 13;
const ORDERS: i64 = 40;

/// Billing: one ledger row per order, in the batch's transaction.
struct Billing;

impl ExactlyOnceHandler for Billing {
    async fn handle(&self, ev: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let order: OrderPlaced = ev.decode()?;
        if order.order_id == DECLINED {
            return Err(HandlerError::new(format!(
                "card of {} declined for order {}",
                order.customer, order.order_id
            )));
        }
        sqlx::query("insert into outbox_ledger (order_id, ev_id, cents) values ($1, $2, $3)")
            .bind(order.order_id)
            .bind(ev.ev_id)
            .bind(order.cents)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Handler failures and dead letters are logged through `tracing`: install a subscriber.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,pgq_ticker=info".into()),
        )
        .init();
    let db = common::database().await?;
    let pool = db.pool.clone();

    // 1. The ticker first, before there is any schema.
    let args = pgq::ticker::Args::parse_from(["pgq-ticker", "--db", &db.url]);
    let config = pgq::ticker::Config::from_args(&args)?;
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let stop_ticker = CancellationToken::new();
    let ticker = tokio::spawn(pgq::ticker::run(config, reload_rx, stop_ticker.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. Install, tables, and the queue with its consumer (millisecond ticks: ticker_max_lag 0).
    core::install(&pool).await?;
    sqlx::raw_sql(
        "create table if not exists outbox_orders (id bigint primary key, customer text, cents bigint);
         create table if not exists outbox_ledger (order_id bigint, ev_id bigint, cents bigint);",
    )
    .execute(&pool)
    .await?;
    let queue = QueueName::new("outbox_orders")?;
    let billing = ConsumerName::new("billing")?;
    let lag0 = QueueConfig {
        ticker_max_lag: Some(Duration::ZERO),
        ..Default::default()
    };
    let mut conn = pool.acquire().await?;
    core::create_queue_with(&mut conn, &queue, &lag0, std::slice::from_ref(&billing)).await?;
    drop(conn);

    // 3. Orders and their events in one transaction each; every tenth is rolled back.
    let orders = Producer::new(queue.clone());
    let mut committed = Vec::new();
    for id in 1..=ORDERS {
        let order = OrderPlaced {
            order_id: id,
            customer: format!("customer-{}", id % 5),
            cents: 100 * id,
        };
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("insert into outbox_orders values ($1, $2, $3)")
            .bind(order.order_id)
            .bind(&order.customer)
            .bind(order.cents)
            .execute(&mut *tx)
            .await?;
        orders.send_typed(&mut *tx, &order).await?;
        if id % 10 == 0 {
            tx.rollback().await?; // neither the order nor its event exist
        } else {
            tx.commit().await?;
            committed.push(id);
        }
    }
    println!(
        "{} orders committed, {} rolled back",
        committed.len(),
        ORDERS as usize - committed.len()
    );

    // 4. The exactly-once billing consumer: 2 retries 1 s apart, then a dead letter.
    let consumer = Consumer::builder(pool.clone(), queue.clone(), billing.clone())
        .delivery(Delivery::ExactlyOnce)
        .max_retries(2)
        .retry_backoff(Backoff::constant(Duration::from_secs(1)))
        .build()?;
    let started = Instant::now();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run_exactly_once(Billing, stop).await }
    });
    let only_ours = DeadLetterFilter {
        queue: Some(queue.clone()),
        ..Default::default()
    };
    loop {
        let ledger: i64 = sqlx::query_scalar("select count(*) from outbox_ledger")
            .fetch_one(&pool)
            .await?;
        let dead = core::list_dead_letters(&pool, &only_ours).await?;
        if ledger + dead.len() as i64 >= committed.len() as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the consumer did not finish: {ledger} in the ledger, {} dead letters",
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    run.await??;
    stop_ticker.cancel();
    ticker.await??;

    // 5. Every committed order handled exactly once or dead-lettered; nothing else.
    let mut ledger: Vec<i64> = sqlx::query_scalar("select order_id from outbox_ledger")
        .fetch_all(&pool)
        .await?;
    ledger.sort_unstable();
    let dead = core::list_dead_letters(&pool, &only_ours).await?;
    let expected_handled: Vec<i64> = committed
        .iter()
        .copied()
        .filter(|&id| id != DECLINED)
        .collect();
    assert_eq!(
        ledger, expected_handled,
        "each committed order exactly once"
    );
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let declined: OrderPlaced = dead[0].event().decode()?;
    assert_eq!(declined.order_id, DECLINED);
    assert_eq!(dead[0].retry, 2, "retried twice before giving up");
    println!(
        "ledger: {} orders exactly once; dead letter {}: order {} after {} retries ({}), \
         all done in {:.1} s",
        ledger.len(),
        dead[0].id,
        declined.order_id,
        dead[0].retry,
        dead[0].reason,
        took.as_secs_f64()
    );
    Ok(())
}
