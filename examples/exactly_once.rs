//! Exactly-once consumption: the handler writes in the batch's transaction, so its writes and
//! `finish_batch` commit together. A crash at any point leaves each event applied once.
//!
//! Uses `DATABASE_URL` when set; otherwise starts a private PostgreSQL cluster with
//! `pgq-testkit`. Run: `cargo run --example exactly_once`.

mod common;

use std::time::Duration;

use pgq::consumer::{CancellationToken, Consumer, Delivery, EventContext, Handler, HandlerError};
use pgq::core::sqlx;
use pgq::core::{self as core, ConsumerName, Event, NewEvent, QueueName};

/// Adds each payment to an account balance, in the batch's transaction.
struct ApplyPayment;

impl Handler for ApplyPayment {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let tx = ctx.transaction().expect("exactly-once delivery");
        let amount: i64 = ev.ev_data.as_deref().unwrap_or("0").parse()?;
        sqlx::query(
            "insert into example_balance (account, total) values ($1, $2)
             on conflict (account) do update set total = example_balance.total + $2",
        )
        .bind(ev.ev_extra1.as_deref().unwrap_or("?"))
        .bind(amount)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = common::database().await?;
    let pool = db.pool.clone();
    core::install(&pool).await?;
    sqlx::raw_sql(
        "create table if not exists example_balance (account text primary key, total bigint)",
    )
    .execute(&pool)
    .await?;
    let queue = QueueName::new("example_payments")?;
    core::create_queue(&pool, &queue).await?;
    let consumer = Consumer::builder(pool.clone(), queue.clone(), ConsumerName::new("ledger")?)
        .delivery(Delivery::ExactlyOnce)
        .build()?;
    consumer.register().await?;

    let payments: Vec<NewEvent> = (1..=100)
        .map(|i| NewEvent::new("payment", (i % 7).to_string()).extra1(format!("acct{}", i % 3)))
        .collect();
    let expected: i64 = (1..=100).map(|i| i % 7).sum();
    core::insert_events(&pool, &queue, &payments).await?;
    core::tick_now(&mut *pool.acquire().await?, &queue).await?; // pgq-ticker / pgqd do this
    println!("produced 100 payments totalling {expected}");

    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(ApplyPayment, stop).await }
    });
    // Wait until the batch is finished (the balance and the consumer's position moved together).
    loop {
        let info = core::get_consumer_info(&pool, &queue, consumer.name()).await?;
        if info.is_some_and(|i| i.pending_events == 0 && i.current_batch.is_none()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await??;
    let total: i64 =
        sqlx::query_scalar("select coalesce(sum(total), 0)::int8 from example_balance")
            .fetch_one(&pool)
            .await?;
    println!("balances total {total} (expected {expected}): each payment applied exactly once");
    Ok(())
}
