//! R6, least privilege end to end, with password authentication: a producer role with only
//! `pgq_writer`, a consumer role with only `pgq_reader`, and the `pgq-ticker` binary as a role
//! with only `pgq_admin` — ticking, rotating the event tables and moving retried events back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgq_consumer::{CancellationToken, Consumer, DeadLetter, EventContext, Handler, HandlerError};
use pgq_core::sqlx::PgPool;
use pgq_core::{Event, NewEvent, QueueConfig, QueueName};
use pgq_producer::Producer;

use crate::passwords::{PASSWORD, assert_no_password, password_cluster, require_password};
use crate::support::{Proc, c, eventually, make_role, scalar, wait_for};

const EVENTS: i64 = 100;

/// Records each event's retry count; asks once for a retry of every tenth event.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<i64, Vec<i32>>>>);

impl Handler for Seen {
    async fn handle(&self, ev: &Event, _ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let n: i64 = ev.ev_data.as_deref().unwrap_or_default().parse().unwrap();
        self.0
            .lock()
            .unwrap()
            .entry(n)
            .or_default()
            .push(ev.retry_count());
        if n % 10 == 0 && ev.retry_count() == 0 {
            return Err(HandlerError::retry_after("try again later", Duration::ZERO));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_reader_and_admin_ticker_work_together_with_least_privilege() {
    let (_cluster, db) = password_cluster().await;
    let admin = db.pool();
    let writer = make_role(&db, "w", "pgq_writer", Some(PASSWORD)).await;
    let reader = make_role(&db, "r", "pgq_reader", Some(PASSWORD)).await;
    let ticker_role = make_role(&db, "t", "pgq_admin", Some(PASSWORD)).await;
    require_password(&db, &[&writer, &reader, &ticker_role]).await;
    let queue = QueueName::new("lp").unwrap();
    pgq_core::create_queue(admin, &queue).await.unwrap();
    let config = QueueConfig {
        rotation_period: Some(Duration::from_secs(2)),
        ticker_max_lag: Some(Duration::from_millis(100)),
        ticker_idle_period: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut admin.acquire().await.unwrap(), &queue, &config)
        .await
        .unwrap();
    let table_sql = "select queue_cur_table::bigint from pgq.queue where queue_name = 'lp'";
    let first_table = scalar(admin, table_sql).await;

    let ticker_url = db.url_as(&ticker_role, Some(PASSWORD));
    let ticker = Proc::ticker(&[
        "--db",
        &ticker_url,
        "--ticker-period",
        "100ms",
        "--maint-period",
        "500ms",
        "--retry-period",
        "300ms",
    ]);
    let reader_pool = PgPool::connect(&db.url_as(&reader, Some(PASSWORD)))
        .await
        .unwrap();
    let consumer = Consumer::builder(reader_pool, queue.clone(), c("c"))
        .dead_letter(DeadLetter::Discard)
        .poll_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    consumer.register().await.unwrap();
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (seen, stop) = (seen.clone(), stop.clone());
        async move { consumer.run(seen, stop).await }
    });

    let writer_pool = PgPool::connect(&db.url_as(&writer, Some(PASSWORD)))
        .await
        .unwrap();
    let producer = Producer::new(queue.clone());
    for round in 0..EVENTS / 10 {
        let base = round * 10;
        producer
            .send(&writer_pool, &NewEvent::new("t", base.to_string()))
            .await
            .unwrap();
        let rest: Vec<NewEvent> = (base + 1..base + 10)
            .map(|n| NewEvent::new("t", n.to_string()))
            .collect();
        producer.send_batch(&writer_pool, &rest).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    wait_for("every event, and every retried one again", || async {
        let seen = seen.0.lock().unwrap();
        (0..EVENTS).all(|n| {
            seen.get(&n).is_some_and(|r| {
                if n % 10 == 0 {
                    r.contains(&1)
                } else {
                    !r.is_empty()
                }
            })
        })
    })
    .await;
    let rotated = eventually("a table rotation by the admin-only ticker", || async {
        let now = scalar(admin, table_sql).await;
        (now != first_table).then_some(now)
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    eprintln!(
        "R6: {EVENTS} events from a pgq_writer role, consumed by a pgq_reader role, {} retried \
         through the pgq_admin ticker's retry mover; event table {first_table} -> {rotated}",
        EVENTS / 10
    );
    let log = ticker.log();
    assert!(!log.to_lowercase().contains("permission denied"), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    assert_no_password("ticker log", &log);
}
