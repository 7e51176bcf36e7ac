//! Consumer benchmarks on a private PostgreSQL cluster (pgq-testkit), release build.
//!
//! `cargo bench --bench consume` runs the criterion benchmark: reading one 200k-event batch to
//! the end through `Consumer::next_batch` (the batch is abandoned after each run, so the same
//! batch comes again). `scripts/bench-consume` runs this binary with `PGQ_BENCH_CONSUME_REPORT=1`
//! instead, which prints the side-by-side figures:
//!
//! - **P3**: consuming one 200k-event batch with the run loop (`Consumer::run`, a handler per
//!   event, the batch finished) vs `psql` reading the same rows (the batch's own query,
//!   `pgq.batch_event_sql`) with `COPY (...) TO STDOUT` and with a plain `SELECT`, both into
//!   /dev/null (goal: ≥ 0.6×), and the `Batch` API (`next_batch` + `next_chunk`) for scale.
//!   Medians of several runs.
//! - **P6**: peak RSS (VmHWM) of a consumer process running the run loop over one 1M-event batch
//!   (goal: ≤ 64 MiB).
//!
//! Besides the human lines, each figure is printed as `RESULT <key> <value> <unit>` for
//! `scripts/bench-compare`. With `PGQ_BENCH_PEERS` naming `bench/peers/peers.py`, pgqueue's
//! Consumer (PyPI 0.6) and python3-pgq's Consumer read the same 200k-event batch too (each as its
//! own registered consumer).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pgq::consumer::{CancellationToken, Consumer, HandlerError, handler_fn};
use pgq::core::sqlx::PgPool;
use pgq::core::{self as core, BatchId, ConsumerName, Event, NewEvent, QueueName};
use pgq_testkit::TestDb;

const P3_EVENTS: u64 = 200_000;
const P6_EVENTS: u64 = 1_000_000;
const RUNS: usize = 5;
const REPORT_ENV: &str = "PGQ_BENCH_CONSUME_REPORT";
const CHILD_ENV: &str = "PGQ_BENCH_CONSUME_CHILD_URL";
const PEERS_ENV: &str = "PGQ_BENCH_PEERS";
/// The consumers the Python peers read the batch as.
const PEER_CONSUMERS: [&str; 2] = ["pgqueue", "python3_pgq"];

fn queue() -> QueueName {
    QueueName::new("bench").expect("queue name")
}

fn consumer_name() -> ConsumerName {
    ConsumerName::new("bench").expect("consumer name")
}

/// A fresh database with one queue holding one batch of `n` events (100-byte payloads) for our
/// consumer and for each of `others` (consumer names, registered alike).
async fn setup(n: u64, others: &[&str]) -> (TestDb, Consumer) {
    let db = TestDb::new().await;
    let pool = db.pool().clone();
    core::create_queue(&pool, &queue())
        .await
        .expect("create queue");
    let consumer = Consumer::builder(pool.clone(), queue(), consumer_name())
        .build()
        .expect("consumer");
    consumer.register().await.expect("register");
    for other in others {
        let name = ConsumerName::new(*other).expect("consumer name");
        core::register_consumer(&pool, &queue(), &name)
            .await
            .expect("register peer consumer");
    }
    let mut tx = pool.begin().await.expect("begin");
    let events = futures_util::stream::iter(
        (0..n).map(|i| Ok::<_, std::io::Error>(NewEvent::new("bench", format!("{i:0>100}")))),
    );
    core::copy_events(&mut tx, &queue(), events)
        .await
        .expect("copy");
    tx.commit().await.expect("commit");
    core::tick_now(&mut pool.acquire().await.expect("conn"), &queue())
        .await
        .expect("tick");
    (db, consumer)
}

/// Read the whole batch through the consumer, then abandon it (it comes again). Returns its id.
async fn read_batch(consumer: &Consumer, pool: &PgPool, expect: u64) -> BatchId {
    let mut conn = pool.acquire().await.expect("conn");
    let mut batch = consumer
        .next_batch(&mut conn)
        .await
        .expect("next_batch")
        .expect("a batch");
    let mut n = 0u64;
    loop {
        let chunk = batch.next_chunk().await.expect("chunk");
        if chunk.is_empty() {
            break;
        }
        n += chunk.len() as u64;
    }
    assert_eq!(n, expect);
    let id = batch.id();
    batch.abandon().await.expect("abandon");
    id
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (db, consumer) = rt.block_on(setup(P3_EVENTS, &[]));
    let pool = db.pool().clone();
    let mut group = c.benchmark_group("consume");
    group.throughput(Throughput::Elements(P3_EVENTS));
    group.sample_size(10);
    group.bench_function("batch_200k", |b| {
        b.to_async(&rt)
            .iter(|| async { read_batch(&consumer, &pool, P3_EVENTS).await })
    });
    group.finish();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Consumer `name` runs `Consumer::run` (a handler that only counts) until its `expect` events
/// were handled and the batch finished; the elapsed time.
async fn run_loop_once(pool: &PgPool, name: &str, expect: u64) -> Duration {
    let consumer = Consumer::builder(
        pool.clone(),
        queue(),
        ConsumerName::new(name).expect("name"),
    )
    .build()
    .expect("consumer");
    let shutdown = CancellationToken::new();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let (seen, shutdown) = (seen.clone(), shutdown.clone());
        handler_fn(move |ev: Event| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n == expect {
                shutdown.cancel(); // the batch in progress is finished first
            }
            std::hint::black_box(ev);
            async { Ok::<_, HandlerError>(()) }
        })
    };
    let start = Instant::now();
    consumer.run(handler, shutdown).await.expect("run");
    let took = start.elapsed();
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), expect);
    took
}

/// `psql -c <command>` with stdout to /dev/null; the elapsed time.
fn psql(url: &str, command: &str) -> Duration {
    let start = Instant::now();
    let status = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command])
        .stdout(Stdio::null())
        .status()
        .expect("run psql (apt-get install postgresql-client)");
    assert!(status.success(), "psql failed");
    start.elapsed()
}

/// `RESULT <key> <ms> ms` for `scripts/bench-compare`.
fn result(key: &str, d: Duration) {
    println!("RESULT {key} {:.3} ms", d.as_secs_f64() * 1e3);
}

/// Run the Python peer script named by `PGQ_BENCH_PEERS` with Debian's python3 (or
/// `PGQ_BENCH_PYTHON`); its output (with its own `RESULT` lines) goes to our stdout.
fn peer(script: &std::ffi::OsStr, args: &[&str]) {
    let python = std::env::var("PGQ_BENCH_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let status = Command::new(python)
        .arg(script)
        .args(args)
        .status()
        .expect("run the Python peer (bench/peers/peers.py)");
    assert!(status.success(), "the Python peer failed: {args:?}");
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The P6 consumer process: run the loop until the 1M-event batch is consumed, print VmHWM.
fn child(url: &str) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let pool = PgPool::connect(url).await.expect("connect");
        run_loop_once(&pool, consumer_name().as_str(), P6_EVENTS).await;
    });
    println!("{}", vm_hwm_kib());
}

fn report() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // P3
    let peers = std::env::var_os(PEERS_ENV);
    let others: &[&str] = if peers.is_some() {
        &PEER_CONSUMERS
    } else {
        &[]
    };
    let loops: Vec<String> = (0..RUNS).map(|i| format!("run_loop_{i}")).collect();
    let others: Vec<&str> = others
        .iter()
        .copied()
        .chain(loops.iter().map(String::as_str))
        .collect();
    let (db, consumer) = rt.block_on(setup(P3_EVENTS, &others));
    let pool = db.pool().clone();
    let mut batch_api = Vec::new();
    let mut batch = BatchId(0);
    for _ in 0..RUNS {
        let start = Instant::now();
        batch = rt.block_on(read_batch(&consumer, &pool, P3_EVENTS));
        batch_api.push(start.elapsed());
    }
    // The run loop: each run is another consumer registered before the batch, so each reads
    // the same batch once, to the end, and finishes it.
    let ours: Vec<Duration> = loops
        .iter()
        .map(|name| rt.block_on(run_loop_once(&pool, name, P3_EVENTS)))
        .collect();
    let sql = rt
        .block_on(core::batch_event_sql(&pool, batch))
        .expect("batch sql");
    let url = db.url();
    let copy_cmd = format!("copy ({sql}) to stdout");
    let copy = median((0..RUNS).map(|_| psql(&url, &copy_cmd)).collect());
    let select = median((0..RUNS).map(|_| psql(&url, &sql)).collect());
    let ours = median(ours);
    let batch_api = median(batch_api);
    let rate = |d: Duration| P3_EVENTS as f64 / d.as_secs_f64();
    println!("P3: one {P3_EVENTS}-event batch, medians of {RUNS} runs");
    println!(
        "  pgq-consumer run loop (handler per event, finish): {:>8.1} ms  {:>9.0} events/s",
        ours.as_secs_f64() * 1e3,
        rate(ours)
    );
    println!(
        "  pgq-consumer Batch (next_batch + next_chunk):      {:>8.1} ms  {:>9.0} events/s",
        batch_api.as_secs_f64() * 1e3,
        rate(batch_api)
    );
    println!(
        "  psql COPY (batch sql) TO STDOUT:        {:>8.1} ms  {:>9.0} events/s",
        copy.as_secs_f64() * 1e3,
        rate(copy)
    );
    println!(
        "  psql SELECT (batch sql):                {:>8.1} ms  {:>9.0} events/s",
        select.as_secs_f64() * 1e3,
        rate(select)
    );
    let vs_select = select.as_secs_f64() / ours.as_secs_f64();
    let vs_copy = copy.as_secs_f64() / ours.as_secs_f64();
    println!(
        "  ratio vs psql SELECT: {vs_select:.2}x  (goal >= 0.6x: {})",
        if vs_select >= 0.6 { "met" } else { "NOT met" }
    );
    println!("  ratio vs psql COPY:   {vs_copy:.2}x");
    println!("RESULT p3.events {P3_EVENTS} events");
    result("p3.ours", ours);
    result("p3.ours_batch_api", batch_api);
    result("p3.psql_select", select);
    result("p3.psql_copy", copy);
    if let Some(script) = &peers {
        let (n, runs) = (P3_EVENTS.to_string(), RUNS.to_string());
        println!("  pgqueue Consumer (PyPI 0.6), the same batch:");
        peer(
            script,
            &[
                "pgqueue-consume",
                &url,
                queue().as_str(),
                PEER_CONSUMERS[0],
                &n,
                &runs,
            ],
        );
        println!("  python3-pgq Consumer, the same batch:");
        peer(
            script,
            &[
                "pgq-consume",
                &url,
                queue().as_str(),
                PEER_CONSUMERS[1],
                &n,
                &runs,
            ],
        );
    }
    drop(consumer);
    drop(db);

    // P6
    let (db, consumer) = rt.block_on(setup(P6_EVENTS, &[]));
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env_remove(REPORT_ENV)
        .env(CHILD_ENV, db.url())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the consumer process");
    assert!(out.status.success(), "the consumer process failed");
    let hwm: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("VmHWM from the consumer process");
    let left = rt
        .block_on(core::get_consumer_info(
            db.pool(),
            &queue(),
            &consumer_name(),
        ))
        .expect("consumer info")
        .expect("registered");
    assert_eq!(left.current_batch, None, "the batch was finished");
    let mib = hwm as f64 / 1024.0;
    println!("P6: consumer process running the loop over one {P6_EVENTS}-event batch");
    println!(
        "  peak RSS (VmHWM): {mib:.1} MiB  (goal <= 64 MiB: {})",
        if mib <= 64.0 { "met" } else { "NOT met" }
    );
    println!("RESULT p6.events {P6_EVENTS} events");
    println!("RESULT p6.peak_rss {mib:.1} MiB");
    drop(consumer);
}

fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(&url);
        return;
    }
    if std::env::var_os(REPORT_ENV).is_some() {
        report();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
