//! R7: a bounded soak at a steady rate with table rotation happening: every event consumed
//! exactly once, rotation by TRUNCATE (no dead tuples in the event tables), flat memory of the
//! consumer and ticker processes; throughput reported.
//!
//! `PGQ_SOAK_SECS` sets the length (default 90 s).

use std::time::{Duration, Instant};

use pgq_consumer::CancellationToken;
use pgq_core::sqlx;
use pgq_testkit::TestDb;

use crate::load::start_producer;
use crate::support::{Proc, c, exec, q, rss_kib, scalar, spawn_test_child, wait_for};

/// Events per second the producer sends (in rounds of a tenth of that every 100 ms).
const RATE: i64 = 200;

struct Sample {
    consumed: i64,
    consumer_rss: u64,
    ticker_rss: u64,
    dead_tuples: i64,
}

fn mean(xs: impl Iterator<Item = u64>) -> f64 {
    let v: Vec<u64> = xs.collect();
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_soak_with_rotation_consumes_everything_once_with_flat_memory() {
    if crate::support::child_mode().is_some() {
        return;
    }
    let secs: u64 = std::env::var("PGQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let db = TestDb::new().await;
    let (pool, url) = (db.pool(), db.url());
    let queue = q("soak");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    let config = pgq_core::QueueConfig {
        rotation_period: Some(Duration::from_secs(5)),
        ticker_max_lag: Some(Duration::from_millis(200)),
        ticker_idle_period: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &queue, &config)
        .await
        .unwrap();
    pgq_core::register_consumer(pool, &queue, &c("c"))
        .await
        .unwrap();
    // No unique key: a duplicate would show as a second row.
    exec(
        pool,
        "create table target (n bigint); create table progress (x int)",
    )
    .await;

    let ticker = Proc::ticker(&[
        "--db",
        &url,
        "--ticker-period",
        "100ms",
        "--maint-period",
        "1s",
        "--retry-period",
        "1s",
    ]);
    let consumer = spawn_test_child(
        "consumer_kill::child_consumer",
        "exactly_once",
        &[("PGQ_CHILD_URL", &url), ("PGQ_CHILD_QUEUE", "soak")],
    );
    let stop = CancellationToken::new();
    let (produced, producer) = start_producer(
        &url,
        &queue,
        RATE / 10,
        Duration::from_millis(100),
        stop.clone(),
    );
    let table_sql = "select queue_cur_table::bigint from pgq.queue where queue_name = 'soak'";
    let event_tables = "from pg_stat_user_tables where schemaname = 'pgq' and relname like \
                        'event\\_' || (select queue_id from pgq.queue where queue_name = 'soak') \
                        || '\\_%'";
    let dead_sql = format!("select coalesce(max(n_dead_tup), 0) {event_tables}");
    assert_eq!(
        scalar(pool, &format!("select count(*) {event_tables}")).await,
        3,
        "the queue's three event tables"
    );
    let first_table = scalar(pool, table_sql).await;
    let mut tables_seen = vec![first_table];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let table = scalar(pool, table_sql).await;
        if tables_seen.last() != Some(&table) {
            tables_seen.push(table);
        }
        samples.push(Sample {
            consumed: scalar(pool, "select count(*) from target").await,
            consumer_rss: rss_kib(consumer.pid()).expect("the consumer process is alive"),
            ticker_rss: rss_kib(ticker.pid()).expect("the ticker process is alive"),
            dead_tuples: scalar(pool, &dead_sql).await,
        });
    }
    stop.cancel();
    producer.await.unwrap();
    let sent = produced.acked_numbers().len() as i64;
    wait_for("the consumer to catch up", || async {
        scalar(pool, "select count(*) from target").await >= sent
    })
    .await;

    let third = samples.len() / 3;
    let (head, tail) = (&samples[..third], &samples[samples.len() - third..]);
    let rate = |s: &[Sample]| {
        (s[s.len() - 1].consumed - s[0].consumed) as f64 / (s.len() - 1).max(1) as f64
    };
    let rss = |s: &[Sample], f: fn(&Sample) -> u64| mean(s.iter().map(f)) / 1024.0;
    let max_dead = samples.iter().map(|s| s.dead_tuples).max().unwrap_or(0);
    eprintln!(
        "R7 soak {secs}s: {sent} events sent at {RATE}/s, {} rotations; throughput first/last \
         third {:.0}/{:.0} ev/s; consumer RSS {:.1}/{:.1} MiB, ticker RSS {:.1}/{:.1} MiB; max \
         n_dead_tup in the event tables {max_dead}; {} producer errors",
        tables_seen.len() - 1,
        rate(head),
        rate(tail),
        rss(head, |s| s.consumer_rss),
        rss(tail, |s| s.consumer_rss),
        rss(head, |s| s.ticker_rss),
        rss(tail, |s| s.ticker_rss),
        produced.errors(),
    );

    assert_eq!(
        scalar(pool, "select count(*) from target").await,
        sent,
        "each event once"
    );
    assert_eq!(
        scalar(pool, "select count(distinct n) from target").await,
        sent,
        "0 duplicates"
    );
    let missing = sqlx::query_scalar::<_, i64>(
        "select count(*) from unnest($1::bigint[]) n where n not in (select n from target)",
    )
    .bind(produced.acked_numbers())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(missing, 0, "0 lost");
    assert!(
        tables_seen.len() >= 2,
        "no rotation happened: {tables_seen:?}"
    );
    assert!(
        max_dead < 50,
        "dead tuples in the event tables: {max_dead} (rotation must TRUNCATE, not delete)"
    );
    for (what, f) in [
        (
            "consumer",
            (|s: &Sample| s.consumer_rss) as fn(&Sample) -> u64,
        ),
        ("ticker", |s: &Sample| s.ticker_rss),
    ] {
        let (h, t) = (rss(head, f), rss(tail, f));
        assert!(
            t <= h * 1.5 + 16.0,
            "{what} RSS grew from {h:.1} MiB to {t:.1} MiB"
        );
    }
}
