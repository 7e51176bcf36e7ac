//! Change capture: pgq's triggers turn every insert, update, delete and truncate of a table into
//! events, with no change to the application's code.
//!
//! Uses `DATABASE_URL` when set (the role must be able to `CREATE EXTENSION pgq` the first time);
//! otherwise starts a private PostgreSQL cluster with `pgq-testkit`.
//! Run: `cargo run --example cdc`.

mod common;

use pgq::core::sqlx::{self, Executor};
use pgq::core::{self as core, ConsumerName, QueueName};
use pgq::producer::{ChangeCapture, EventField};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = common::database().await?;
    let pool = db.pool.clone();
    core::install(&pool).await?;
    let queue = QueueName::new("example_cdc")?;
    let consumer = ConsumerName::new("example_replica")?;
    core::create_queue(&pool, &queue).await?;
    core::register_consumer(&pool, &queue, &consumer).await?;
    pool.execute(
        "create schema if not exists example_shop; \
         drop table if exists example_shop.customers; \
         create table example_shop.customers \
           (id int primary key, name text not null, email text, seen_at timestamptz)",
    )
    .await?;

    // Capture the table as JSON rows; `seen_at` churn alone is not worth an event; the old row of
    // an update rides along in ev_extra2; ev_extra3 carries the email domain for routing.
    let capture = ChangeCapture::jsontriga(queue.clone(), "example_shop.customers")
        .ignore(["seen_at"])
        .backup()
        .set(EventField::Extra3, "split_part(email, '@', 2)");
    let mut conn = pool.acquire().await?;
    for t in capture.attach(&mut conn).await? {
        println!(
            "attached trigger {} ({:?}, args {:?})",
            t.name, t.events, t.args
        );
    }
    drop(conn);

    // The application writes as usual.
    for sql in [
        "insert into example_shop.customers values (1, 'Ada', 'ada@example.org', now())",
        "update example_shop.customers set seen_at = now() where id = 1",
        "update example_shop.customers set email = 'ada@example.com' where id = 1",
        "delete from example_shop.customers where id = 1",
        "truncate example_shop.customers",
    ] {
        sqlx::query(sql).execute(&pool).await?;
        println!("app: {sql}");
    }

    core::tick_now(&mut *pool.acquire().await?, &queue).await?;
    let mut seen = 0;
    while let Some(batch) = core::next_batch(&pool, &queue, &consumer).await? {
        for ev in core::get_batch_events(&pool, batch).await? {
            seen += 1;
            println!("event {}", ev.ev_id);
            println!("  ev_type   {}", ev.ev_type.as_deref().unwrap_or(""));
            println!("  ev_data   {}", ev.ev_data.as_deref().unwrap_or(""));
            println!("  table     {}", ev.ev_extra1.as_deref().unwrap_or(""));
            if let Some(old) = ev.ev_extra2.as_deref() {
                println!("  old row   {old}");
            }
            if let Some(domain) = ev.ev_extra3.as_deref() {
                println!("  domain    {domain}");
            }
        }
        core::finish_batch(&pool, batch).await?;
    }
    println!("{seen} events for 5 statements (the seen_at-only update made none)");
    assert_eq!(seen, 4);

    let mut conn = pool.acquire().await?;
    println!("detached {} triggers", capture.detach(&mut conn).await?);
    drop(conn);
    pool.execute("drop schema example_shop cascade").await?;
    core::unregister_consumer(&pool, &queue, &consumer).await?;
    core::drop_queue(&pool, &queue, false).await?;
    Ok(())
}
