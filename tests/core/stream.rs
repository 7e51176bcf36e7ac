//! Streaming a very large batch with bounded memory.

use futures_util::TryStreamExt;
use pgq_core::NewEvent;
use pgq_testkit::TestDb;

use crate::common::{batch, setup, tick};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_event_batch_streams_with_bounded_memory() {
    const N: u64 = 1_000_000;
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "big", "c").await;
    let payload = "x".repeat(200);

    let mut tx = pool.begin().await.unwrap();
    let events = futures_util::stream::iter(
        (0..N).map(|i| Ok::<_, std::io::Error>(NewEvent::new("big", format!("{i:08}{payload}")))),
    );
    assert_eq!(pgq_core::copy_events(&mut tx, &q, events).await.unwrap(), N);
    tx.commit().await.unwrap();
    tick(pool, &q).await;
    let b = batch(pool, &q, &c).await;

    // Loaded whole, these rows would take well over 300 MB; streamed, memory stays flat.
    let base = rss_kib();
    let mut peak = base;
    let mut count = 0u64;
    let mut sum = 0u64;
    let mut conn = pool.acquire().await.unwrap();
    let mut s = pgq_core::stream_batch_events(&mut conn, b, &Default::default())
        .await
        .unwrap();
    while let Some(ev) = s.try_next().await.unwrap() {
        count += 1;
        sum += ev.ev_data.as_deref().unwrap()[..8].parse::<u64>().unwrap();
        if count.is_multiple_of(50_000) {
            peak = peak.max(rss_kib());
        }
    }
    drop(s);
    assert_eq!(count, N);
    assert_eq!(sum, N * (N - 1) / 2, "every event exactly once");
    let growth_mib = peak.saturating_sub(base) / 1024;
    assert!(
        growth_mib < 100,
        "RSS grew {growth_mib} MiB while streaming {N} events"
    );
    pgq_core::finish_batch(&mut *conn, b).await.unwrap();
}
