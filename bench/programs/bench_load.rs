//! Delivery under load (issue goals P10–P12; run by `scripts/bench-load`, release build). Every
//! mode runs twice on the same load, `ours` (pgq-ticker + pgq-consumer's run loop) and `pgqd`
//! (pgqd ticking every 10 ms + pgqueue's `Consumer` polling every 10 ms, from
//! `bench/peers/peers.py`), each on its own private cluster:
//!
//! - `consumers ours|pgqd N RATE SECS`: P10, N consumers as separate processes on one
//!   `ticker_max_lag = 0` queue, one producer sending single events at RATE ev/s: each consumer's
//!   p50/p99 and the worst, and the CPU of the database, of the ticker and of one consumer.
//! - `rate ours|pgqd RATE SECS`: P11, RATE ev/s on a lag-0 queue, half sent singly by two
//!   connections, half in batches of 50 by a third; one consumer process: p50/p99, lost events,
//!   the rate the producers reached.
//! - `pipeline ours|pgqd|table PRODUCERS BATCH SECS`: P12, PRODUCERS connections sending batches
//!   of BATCH events per transaction as fast as they can for SECS (pausing while the consumer is
//!   more than 500 ms behind), one consumer process: events/s
//!   delivered within the window and the consumer's worst lag; `table` inserts the same rows into
//!   a plain table instead (the reference the ratio is taken to).
//! - `follow URL QUEUE CONSUMER TOTAL STOP_AT_US` (used by the modes above): one consumer process
//!   (pgq-consumer's run loop, defaults) until TOTAL events or the epoch time STOP_AT_US; prints
//!   `FOLLOW <events> <p50 ms> <p99 ms> <max ms> <cpu s>`.
//!
//! The events carry their send time (µs since the epoch) as data. Each figure is printed as
//! `RESULT <key> <value> <unit>` for `scripts/bench-compare`. `PGQ_TICKER_BIN` names the
//! pgq-ticker binary; `PGQ_BENCH_PEERS` and `PGQ_BENCH_PYTHON` the Python peers (set by
//! `scripts/bench-load`).

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_consumer::{CancellationToken, Consumer, handler_fn};
use pgq_core::{ConsumerName, Event, NewEvent, QueueConfig, QueueName};
use pgq_producer::Producer;
use pgq_testkit::Cluster;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::{Proc, Res, Ticker, cluster_cpu, cluster_cpu_delta, cpu_secs, now_us, pct};

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let who = || match args.get(1).map(String::as_str) {
        Some("pgqd") => Who::Pgqd,
        Some("table") => Who::Table,
        _ => Who::Ours,
    };
    match args.first().map(String::as_str) {
        Some("consumers") => consumers(who(), num(2, 10), num(3, 1000), num(4, 30)).await,
        Some("rate") => rate(who(), num(2, 10_000), num(3, 30)).await,
        Some("pipeline") => pipeline(who(), num(2, 4), num(3, 100), num(4, 60)).await,
        Some("follow") if args.len() == 6 => {
            follow(&args[1], &args[2], &args[3], num(4, 0), num(5, 0) as i64).await
        }
        _ => {
            eprintln!(
                "usage: bench_load consumers ours|pgqd N RATE SECS | rate ours|pgqd RATE SECS \
                 | pipeline ours|pgqd|table PRODUCERS BATCH SECS | follow URL QUEUE CONSUMER TOTAL STOP_AT_US"
            );
            std::process::exit(2);
        }
    }
}

/// Who ticks and consumes.
#[derive(Clone, Copy, PartialEq)]
enum Who {
    /// pgq-ticker and pgq-consumer's run loop.
    Ours,
    /// pgqd at 10 ms and pgqueue's Consumer polling every 10 ms.
    Pgqd,
    /// Nobody: the producers write a plain table (P12's reference).
    Table,
}

impl Who {
    fn key(self) -> &'static str {
        match self {
            Who::Ours => "ours",
            Who::Pgqd => "pgqd10ms",
            Who::Table => "table",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Who::Ours => "pgq-ticker + pgq-consumer run loop",
            Who::Pgqd => "pgqd 10 ms + pgqueue Consumer polling 10 ms",
            Who::Table => "plain table",
        }
    }
}

/// A private cluster with one database, one lag-0 queue `q` and `consumers` registered consumers
/// `c0`…, and the ticker (pgq-ticker or pgqd) running.
struct Setup {
    // Dropped in this order: the ticker stops before the cluster does.
    ticker: Option<Ticker>,
    pool: PgPool,
    cluster: Cluster,
    url: String,
    queue: QueueName,
    _dir: tempfile::TempDir,
}

async fn setup(who: Who, consumers: u64) -> Res<Setup> {
    let cluster = Cluster::start_private()?;
    let url = support::private_db(&cluster, "load").await?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    let queue = QueueName::new("q")?;
    pgq_core::create_queue(&pool, &queue).await?;
    let lag0 = QueueConfig {
        ticker_max_lag: Some(Duration::ZERO),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut *pool.acquire().await?, &queue, &lag0).await?;
    for i in 0..consumers {
        pgq_core::register_consumer(&pool, &queue, &ConsumerName::new(format!("c{i}"))?).await?;
    }
    let dir = tempfile::tempdir()?;
    let ticker = match who {
        Who::Ours => Some(support::spawn_ticker(&["--db", &url])),
        Who::Pgqd => Some(support::spawn_pgqd(cluster.port(), "0.01")),
        Who::Table => None,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Setup {
        cluster,
        url,
        pool,
        queue,
        ticker,
        _dir: dir,
    })
}

/// One consumer process of `who` reading `consumer` until `total` events (0: no limit) or the
/// epoch time `stop_at_us`.
fn spawn_follower(who: Who, s: &Setup, consumer: &str, total: u64, stop_at_us: i64) -> Proc {
    let mut cmd = match who {
        Who::Pgqd => {
            let python = std::env::var("PGQ_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
            let peers = std::env::var("PGQ_BENCH_PEERS")
                .expect("PGQ_BENCH_PEERS (scripts/bench-load sets it)");
            let mut c = Command::new(python);
            c.arg(peers).arg("pgqueue-follow");
            c
        }
        _ => {
            let mut c = Command::new(std::env::current_exe().expect("current exe"));
            c.arg("follow");
            c
        }
    };
    cmd.arg(&s.url)
        .arg(s.queue.as_str())
        .arg(consumer)
        .arg(total.to_string())
        .arg(stop_at_us.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("start a consumer process")
}

/// What one consumer process reported.
#[derive(Debug, Default, Clone, Copy)]
struct Followed {
    events: u64,
    p50: f64,
    p99: f64,
    max: f64,
    cpu: f64,
}

fn wait_follower(mut child: Proc) -> Res<Followed> {
    let out = child.0.stdout.take().expect("stdout");
    let mut got = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("FOLLOW ") {
            let v: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            if v.len() == 5 {
                got = Some(Followed {
                    events: v[0] as u64,
                    p50: v[1],
                    p99: v[2],
                    max: v[3],
                    cpu: v[4],
                });
            }
        }
    }
    let status = child.0.wait()?;
    match got {
        Some(f) if status.success() => Ok(f),
        _ => Err(format!("a consumer process failed ({status}) without its FOLLOW line").into()),
    }
}

/// The producers of one run: connections sending single events at a rate each, and connections
/// sending batches of a size at a number of batches per second each (0: as fast as they can).
#[derive(Clone, Default)]
struct Load {
    singles: Vec<u64>,
    batches: Vec<(usize, u64)>,
}

/// Run `load` for `secs` against `queue` (or, with `table`, into that plain table); events sent.
async fn produce(
    pool: &PgPool,
    queue: &QueueName,
    load: &Load,
    secs: u64,
    table: Option<&str>,
    paused: Option<Arc<AtomicBool>>,
) -> Res<u64> {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for &r in &load.singles {
        let (pool, queue) = (pool.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let interval = Duration::from_secs_f64(1.0 / r as f64);
            let mut n = 0u64;
            for i in 0..r * secs {
                tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
                pgq_core::insert_event(&mut *conn, &queue, "t", &now_us().to_string()).await?;
                n += 1;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(n)
        }));
    }
    for &(size, per_s) in &load.batches {
        let (pool, queue) = (pool.clone(), queue.clone());
        let table = table.map(str::to_string);
        let paused = paused.clone();
        tasks.push(tokio::spawn(async move {
            // A plain connection: `send_batch` on a pooled one is not `Send` in a spawned task.
            let mut conn = pool.acquire().await?.detach();
            let producer = Producer::new(queue);
            let mut n = 0u64;
            let mut i = 0u64;
            loop {
                if per_s > 0 {
                    if i >= per_s * secs {
                        break;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / per_s as f64);
                    tokio::time::sleep_until(due.into()).await;
                } else if Instant::now() >= end {
                    break;
                }
                if paused.as_ref().is_some_and(|p| p.load(Ordering::Relaxed)) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let sent = now_us().to_string();
                match &table {
                    Some(t) => {
                        let data = vec![sent; size];
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "insert into {t} (ev_type, ev_data) select 't', unnest($1::text[])"
                        )))
                        .bind(&data)
                        .execute(&mut conn)
                        .await?;
                    }
                    None => {
                        let evs = vec![NewEvent::new("t", sent); size];
                        producer.send_batch(&pool, &evs).await?;
                    }
                }
                n += size as u64;
                i += 1;
            }
            Ok(n)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await?.map_err(|e| e.to_string())?;
    }
    Ok(sent)
}

/// P10: N consumer processes on one lag-0 queue.
async fn consumers(who: Who, n: u64, rate: u64, secs: u64) -> Res<()> {
    let s = setup(who, n).await?;
    let stop_at = now_us() + (secs as i64 + 20) * 1_000_000;
    let total = rate * secs;
    let children: Vec<Proc> = (0..n)
        .map(|i| spawn_follower(who, &s, &format!("c{i}"), total, stop_at))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db0 = cluster_cpu(&s.cluster);
    let ticker_pid = s.ticker.as_ref().map(Ticker::pid).unwrap_or(0);
    let t0 = cpu_secs(ticker_pid);
    let started = Instant::now();
    let load = Load {
        singles: vec![rate],
        ..Default::default()
    };
    let sent = produce(&s.pool, &s.queue, &load, secs, None, None).await?;
    let wall = started.elapsed().as_secs_f64();
    let db = cluster_cpu_delta(&db0, &cluster_cpu(&s.cluster)) / wall * 100.0;
    let ticker = (cpu_secs(ticker_pid) - t0) / wall * 100.0;
    let mut got = Vec::new();
    for c in children {
        got.push(wait_follower(c)?);
    }
    let (key, label) = (who.key(), who.label());
    println!("P10 {n} consumers, {rate} ev/s for {secs} s, {label}: sent {sent}");
    for (i, f) in got.iter().enumerate() {
        println!(
            "  c{i}: {} events, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, cpu {:.2} s",
            f.events, f.p50, f.p99, f.max, f.cpu
        );
    }
    let worst = |f: fn(&Followed) -> f64| got.iter().map(f).fold(0.0, f64::max);
    let lost: u64 = got.iter().map(|f| sent.saturating_sub(f.events)).sum();
    let one = got.first().map_or(0.0, |f| f.cpu / wall * 100.0);
    println!(
        "  worst p50 {:.2} ms, worst p99 {:.2} ms, lost {lost}; CPU: database {db:.1} %, ticker {ticker:.1} %, one consumer {one:.1} %",
        worst(|f| f.p50),
        worst(|f| f.p99)
    );
    println!("RESULT p10.{key}.worst_p50 {:.3} ms", worst(|f| f.p50));
    println!("RESULT p10.{key}.worst_p99 {:.3} ms", worst(|f| f.p99));
    println!("RESULT p10.{key}.lost {lost} events");
    println!("RESULT p10.{key}.cpu_db {db:.1} %");
    println!("RESULT p10.{key}.cpu_ticker {ticker:.1} %");
    println!("RESULT p10.{key}.cpu_consumer {one:.1} %");
    Ok(())
}

/// P11: a high rate, sent singly and in batches, one consumer.
async fn rate(who: Who, rate: u64, secs: u64) -> Res<()> {
    let s = setup(who, 1).await?;
    // Half singly over two connections, half in batches of 50.
    let single = rate / 4;
    let batch = 50;
    let load = Load {
        singles: vec![single, single],
        batches: vec![(batch, (rate - 2 * single) / batch as u64)],
    };
    let total = 2 * single * secs + (rate - 2 * single) / batch as u64 * batch as u64 * secs;
    let child = spawn_follower(
        who,
        &s,
        "c0",
        total,
        now_us() + (secs as i64 + 20) * 1_000_000,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let sent = produce(&s.pool, &s.queue, &load, secs, None, None).await?;
    let reached = sent as f64 / started.elapsed().as_secs_f64();
    let f = wait_follower(child)?;
    let key = who.key();
    let lost = sent.saturating_sub(f.events);
    println!(
        "P11 {rate} ev/s for {secs} s ({} singly, the rest in batches of {batch}), {}: sent {sent} ({reached:.0} ev/s reached), \
         received {}, lost {lost}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        2 * single,
        who.label(),
        f.events,
        f.p50,
        f.p99,
        f.max
    );
    println!("RESULT p11.{key}.p50 {:.3} ms", f.p50);
    println!("RESULT p11.{key}.p99 {:.3} ms", f.p99);
    println!("RESULT p11.{key}.lost {lost} events");
    println!("RESULT p11.{key}.reached {reached:.0} ev/s");
    Ok(())
}

/// P12's backpressure: producers pause while the consumer's lag is above this.
const PAUSE_LAG_MS: u64 = 500;

/// P12: producers as fast as they can, one consumer: delivered events/s and its lag.
async fn pipeline(who: Who, producers: u64, batch: u64, secs: u64) -> Res<()> {
    let s = setup(who, 1).await?;
    let table = (who == Who::Table).then_some("plain_events");
    if let Some(t) = table {
        // The rows an event table holds, as an event table holds them (same columns, an index
        // on the transaction id), without the queue: the reference for the ratio.
        for q in [
            format!(
                "create table {t} (ev_id bigserial, ev_time timestamptz not null default now(), \
                 ev_txid bigint not null default txid_current(), ev_owner int, ev_retry int, ev_type text, \
                 ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)"
            ),
            format!("create index on {t} (ev_txid)"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(q)).execute(&s.pool).await?;
        }
    }
    let window_end = now_us() + (secs as i64 + 2) * 1_000_000;
    let child = (who != Who::Table).then(|| spawn_follower(who, &s, "c0", 0, window_end));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load = Load {
        batches: vec![(batch as usize, 0); producers as usize],
        ..Default::default()
    };
    // Backpressure, as a service would apply it: the producers pause while the consumer is more
    // than half a second behind, so what is measured is the rate the pipeline sustains with the
    // consumer's lag bounded.
    let paused = Arc::new(AtomicBool::new(false));
    let watch = (who != Who::Table).then(|| {
        let (pool, queue, paused) = (s.pool.clone(), s.queue.clone(), paused.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Ok(info) = pgq_core::get_consumer_info_queue(&pool, &queue).await else {
                    continue;
                };
                let behind = info
                    .iter()
                    .filter_map(|c| c.lag)
                    .any(|l| l > Duration::from_millis(PAUSE_LAG_MS));
                paused.store(behind, Ordering::Relaxed);
            }
        })
    });
    let started = Instant::now();
    let sent = produce(&s.pool, &s.queue, &load, secs, table, Some(paused)).await?;
    if let Some(w) = watch {
        w.abort();
    }
    let wall = started.elapsed().as_secs_f64();
    let key = who.key();
    let produced = sent as f64 / wall;
    match child {
        None => {
            println!(
                "P12 {producers} producers x batches of {batch}, {secs} s, plain table: {sent} rows, {produced:.0} rows/s"
            );
            println!("RESULT p12.table.rows_per_s {produced:.0} rows/s");
        }
        Some(c) => {
            let f = wait_follower(c)?;
            let delivered = f.events as f64 / wall;
            println!(
                "P12 {producers} producers x batches of {batch}, {secs} s, {}: produced {sent} ({produced:.0} ev/s), \
                 delivered {} in the window ({delivered:.0} ev/s); lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                who.label(),
                f.events,
                f.p50,
                f.p99,
                f.max
            );
            println!("RESULT p12.{key}.produced_per_s {produced:.0} ev/s");
            println!("RESULT p12.{key}.delivered_per_s {delivered:.0} ev/s");
            println!("RESULT p12.{key}.lag_max {:.0} ms", f.max);
        }
    }
    Ok(())
}

/// One consumer process: the run loop with its defaults until `total` events (0: no limit) or
/// the epoch time `stop_at_us`; prints the FOLLOW line.
async fn follow(url: &str, queue: &str, consumer: &str, total: u64, stop_at_us: i64) -> Res<()> {
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let lat = Arc::new(Mutex::new(Vec::<f64>::with_capacity(total as usize)));
    let stop = CancellationToken::new();
    let c =
        Consumer::builder(pool, QueueName::new(queue)?, ConsumerName::new(consumer)?).build()?;
    let handler = handler_fn({
        let (lat, stop) = (lat.clone(), stop.clone());
        move |ev: Event| {
            let (lat, stop) = (lat.clone(), stop.clone());
            async move {
                let now = now_us();
                if now < stop_at_us
                    && let Some(sent) = ev.ev_data.as_deref().and_then(|d| d.parse::<i64>().ok())
                {
                    let mut lat = lat.lock().expect("latencies");
                    lat.push((now - sent) as f64 / 1000.0);
                    if total > 0 && lat.len() as u64 >= total {
                        stop.cancel();
                    }
                }
                Ok(())
            }
        }
    });
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { c.run(handler, stop).await }
    });
    let left = Duration::from_micros((stop_at_us - now_us()).max(0) as u64);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(left) => stop.cancel(),
    }
    run.await??;
    let mut v = std::mem::take(&mut *lat.lock().expect("latencies"));
    v.sort_by(f64::total_cmp);
    println!(
        "FOLLOW {} {:.3} {:.3} {:.3} {:.2}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        cpu_secs(std::process::id())
    );
    Ok(())
}
