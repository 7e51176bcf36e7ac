//! R2: PostgreSQL stopped in `immediate` mode under load and started again: producers see
//! errors (never a silent loss), no committed event is lost, and the ticker and the consumer
//! recover soon after the server is back.

use std::time::{Duration, Instant};

use pgq_core::sqlx::PgPool;
use pgq_testkit::{Cluster, TestDb};

use crate::load::Load;
use crate::support::{Proc, busy_queue, eventually, tick_count, wait_for};

/// The bound is 5 s; checked generously (a busy 2-core machine), the figure printed.
/// Both retry loops are capped well below it: the ticker's reconnect backoff at 3 s, the load's
/// consumer at 1 s (`load::start_consumer`), so only a recovery bug can exceed it.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_postgres_immediate_stop_under_load_loses_no_committed_event() {
    if crate::support::child_mode().is_some() {
        return;
    }
    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    let url = db.url();
    let queue = busy_queue(db.pool(), "r2").await;
    let ticker = Proc::ticker(&["--db", &url, "--ticker-period", "100ms"]);
    let load = Load::start(&url, &queue, 5).await;
    let (produced, consumed) = (&load.produced, &load.consumed);
    wait_for("events to flow", || async { consumed.len() >= 100 }).await;

    db.pool().close().await;
    let errors_before = produced.errors();
    tokio::task::block_in_place(|| cluster.stop_immediate()).expect("stop -m immediate");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.start()).expect("start again");
    let back = Instant::now();
    let outage_errors = produced.errors() - errors_before;

    let pool = PgPool::connect(&url).await.unwrap();
    let ticks = tick_count(&pool, "r2").await;
    let ticker_at = eventually("the ticker to tick again", || async {
        (tick_count(&pool, "r2").await > ticks).then(Instant::now)
    })
    .await;
    let (first, produced_at) = eventually("the producer to commit again", || async {
        produced.first_acked_after(back)
    })
    .await;
    let consumed_at = eventually("the consumer to consume a new event", || async {
        consumed.contains(first).then(Instant::now)
    })
    .await;
    let since = |t: Instant| t.saturating_duration_since(back);
    eprintln!(
        "R2: server down {:.1}s; {outage_errors} producer errors; after the server was back: \
         ticker ticked in {:.2}s, producer committed in {:.2}s, consumer had that event in {:.2}s",
        back.duration_since(stopped).as_secs_f64(),
        since(ticker_at).as_secs_f64(),
        since(produced_at).as_secs_f64(),
        since(consumed_at).as_secs_f64(),
    );
    assert!(
        outage_errors > 0,
        "the producer saw no error while the server was down"
    );
    assert!(
        since(ticker_at) < RECOVERY_BOUND,
        "ticker recovery took {:?}\n{}",
        since(ticker_at),
        ticker.log()
    );
    assert!(since(consumed_at) < RECOVERY_BOUND);

    // More load after the restart, then everything committed must arrive.
    let acked_now = produced.acked_numbers().len();
    wait_for("more events after the restart", || async {
        produced.acked_numbers().len() >= acked_now + 100
    })
    .await;
    let errors = produced.errors();
    let acked = load.finish().await;
    eprintln!("R2: {acked} events committed, all consumed ({errors} errors in total)");
    assert!(ticker.log().contains("could not connect") || ticker.log().contains("reconnecting"));
}
