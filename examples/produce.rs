//! Typed events produced in the application's own transaction: the order row and its event
//! commit together, and a rolled-back transaction produces nothing.
//!
//! Uses `DATABASE_URL` when set (the role must be able to `CREATE EXTENSION pgq` the first time);
//! otherwise starts a private PostgreSQL cluster with `pgq-testkit`.
//! Run: `cargo run --example produce`.

mod common;

use pgq::core::sqlx::{self, PgPool};
use pgq::core::{self as core, ConsumerName, QueueName};
use pgq::producer::{Extras, Producer, TypedEvent};

/// The event the application emits when an order is placed.
#[derive(serde::Serialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    total_cents: i64,
}

impl TypedEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order.placed";
    // The customer goes to ev_extra1, so consumers can filter without parsing the payload.
    fn extras(&self) -> Extras {
        Extras {
            extra1: Some(self.customer.clone()),
            ..Extras::default()
        }
    }
}

/// The application's unit of work: insert the order, emit the event, in one transaction.
async fn place_order(
    pool: &PgPool,
    orders: &Producer,
    order: OrderPlaced,
    commit: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = pool.begin().await?;
    sqlx::query("insert into example_orders (id, customer, total_cents) values ($1, $2, $3)")
        .bind(order.order_id)
        .bind(&order.customer)
        .bind(order.total_cents)
        .execute(&mut *tx)
        .await?;
    let id = orders.send_typed(&mut *tx, &order).await?;
    if commit {
        tx.commit().await?;
        println!(
            "order {} placed, event {id} committed with it",
            order.order_id
        );
    } else {
        tx.rollback().await?;
        println!(
            "order {} rolled back: its event {id} disappears with it",
            order.order_id
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = common::database().await?;
    let pool = db.pool.clone();
    core::install(&pool).await?;
    let queue = QueueName::new("example_orders")?;
    let consumer = ConsumerName::new("example_billing")?;
    core::create_queue(&pool, &queue).await?;
    core::register_consumer(&pool, &queue, &consumer).await?;
    sqlx::query(
        "create table if not exists example_orders \
         (id bigint primary key, customer text not null, total_cents bigint not null)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("truncate example_orders")
        .execute(&pool)
        .await?;

    let orders = Producer::new(queue.clone());
    for (id, customer, commit) in [
        (1, "acme", true),
        (2, "globex", false),
        (3, "initech", true),
    ] {
        let order = OrderPlaced {
            order_id: id,
            customer: customer.into(),
            total_cents: id * 1250,
        };
        place_order(&pool, &orders, order, commit).await?;
    }

    // A ticker (pgq-ticker or pgqd) closes batches; here we tick by hand and read them back.
    core::tick_now(&mut *pool.acquire().await?, &queue).await?;
    let mut seen = 0;
    while let Some(batch) = core::next_batch(&pool, &queue, &consumer).await? {
        for ev in core::get_batch_events(&pool, batch).await? {
            seen += 1;
            println!(
                "consumer got {} customer={} {}",
                ev.ev_type.as_deref().unwrap_or(""),
                ev.ev_extra1.as_deref().unwrap_or(""),
                ev.ev_data.as_deref().unwrap_or("")
            );
        }
        core::finish_batch(&pool, batch).await?;
    }
    println!("{seen} events for 2 committed orders; the rolled-back order produced none");
    assert_eq!(seen, 2);

    core::unregister_consumer(&pool, &queue, &consumer).await?;
    core::drop_queue(&pool, &queue, false).await?;
    sqlx::query("drop table example_orders")
        .execute(&pool)
        .await?;
    Ok(())
}
