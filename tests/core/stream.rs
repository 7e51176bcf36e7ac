//! Streaming a very large batch with bounded memory.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgq_core::sqlx::PgPool;
use pgq_core::{BatchId, NewEvent};
use pgq_testkit::TestDb;

use crate::common::{batch, setup, tick};

const N: u64 = 1_000_000;
const TEST: &str = "stream::a_million_event_batch_streams_with_bounded_memory";

/// Set (to `URL BATCH_ID`) when this test binary is re-run to stream the batch in a process of
/// its own: the memory measured is then the streaming's only, not that of other tests running
/// in the same process.
const CHILD_ENV: &str = "PGQ_CORE_STREAM_CHILD";

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    pgq_testkit::rss_kib(std::process::id()).expect("VmRSS of this process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_event_batch_streams_with_bounded_memory() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (url, id) = arg.split_once(' ').expect("URL BATCH_ID");
        stream_and_report(url, BatchId(id.parse().unwrap())).await;
        return;
    }
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
    let report = tokio::task::spawn_blocking({
        let arg = format!("{} {}", db.url(), b.0);
        move || run_child(&arg)
    })
    .await
    .unwrap();
    let field = |k: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {report}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("count="), N);
    assert_eq!(field("sum="), N * (N - 1) / 2, "every event exactly once");
    let growth_mib = field("growth_kib=") / 1024;
    assert!(
        growth_mib < 100,
        "RSS of the streaming process grew {growth_mib} MiB while streaming {N} events"
    );
    pgq_core::finish_batch(pool, b).await.unwrap();
}

/// Run this test again in a child process that streams the batch; its report line.
fn run_child(arg: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-run the test binary");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    // A hang guard for a busy machine, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the streaming child process did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap().unwrap();
    assert!(
        status.success(),
        "the streaming child failed: {status:?}\n{out}"
    );
    // The harness prints the test's name on the same line before the report.
    out.lines()
        .find_map(|l| l.split_once("STREAM ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| panic!("no report from the streaming child:\n{out}"))
}

/// The child's part: stream batch `b` to its end, sampling this process's memory; print a
/// report line (the parent finishes the batch).
async fn stream_and_report(url: &str, b: BatchId) {
    let pool = PgPool::connect(url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let base = rss_kib();
    let mut peak = base;
    let mut count = 0u64;
    let mut sum = 0u64;
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
    println!(
        "STREAM count={count} sum={sum} growth_kib={}",
        peak.saturating_sub(base)
    );
}
