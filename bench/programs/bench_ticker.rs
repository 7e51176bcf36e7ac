//! Measurements for pgq-ticker (run by `scripts/bench-ticker`, release build):
//!
//! - `latency RATE SECS`: P4, end-to-end latency producer → pgq-ticker → consumer on a queue with
//!   `ticker_max_lag = 0`: autocommit inserts at RATE ev/s, and pgq-consumer's run loop
//!   (`Consumer::run`, default settings: woken by the tick NOTIFY) as the consumer; prints
//!   p50/p99/max and lost events.
//! - `latency-core RATE SECS`: the same with a minimal consumer on pgq-core's functions (LISTEN,
//!   `next_batch_info`, `get_batch_events`, `finish_batch`): the floor the run loop is held to.
//! - `idle SECS`: CPU of the ticker and its database sessions with one lag-0 queue and no events
//!   (the fast path's idle cost), against pgqd at a 10 ms ticker period.
//! - `many DBS QUEUES SECS`: P5, one process ticking DBS databases × QUEUES queues at the default
//!   period (queues set to want a tick every round), then pgqd on the same databases: worst tick age
//!   and CPU of each.
//! - `latency-pgqd PERIOD_MS POLL_MS RATE SECS`: the P4 anchors, the same producer and queue with
//!   pgqd ticking at PERIOD_MS and a consumer polling `next_batch` every POLL_MS.
//!
//! - `held ours|pgqd RATE PRE HOLD POST`: P9, the P4 setup (`ours`: pgq-ticker and the run loop;
//!   `pgqd`: pgqd at 10 ms and a consumer polling every 10 ms with pgqueue's statements) at RATE
//!   ev/s for PRE + HOLD + POST seconds, while a `REPEATABLE READ` transaction holds the xmin
//!   horizon during HOLD: latency before / while / after, events undelivered 10 s after the
//!   producer stops, the backlog when it stops, and what the database did (updates of the
//!   consumer's `pgq.subscription` row per second, ticks per second, calls and mean time of the
//!   pgq functions from `pg_stat_user_functions`).
//!
//! `PGQ_BENCH_SPLIT=1` (`latency-core` runs) also splits each event's latency into producer round trip,
//! commit → tick, tick → consumer asks, and the consumer's round trips, on stderr;
//! `PGQ_BENCH_SPLIT_CSV=FILE` writes every event's times there (µs: sent, committed, tick, asked,
//! got).
//!
//! Besides the human lines, each figure is printed as `RESULT <key> <value> <unit>` for
//! `scripts/bench-compare`.
//!
//! Each run starts a private PostgreSQL cluster (pgq-testkit). `PGQ_TICKER_BIN` names the
//! pgq-ticker binary (default: next to this example's directory).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use pgq_consumer::{CancellationToken, Consumer, handler_fn};
use pgq_core::{ConsumerName, Event, QueueName};
use pgq_testkit::Cluster;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use support::{Res, cpu_secs, now_us, pct, ppid, private_db, spawn_pgqd, spawn_ticker};

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("latency") => latency(num(1, 100), num(2, 10), Reader::Consumer).await,
        Some("latency-core") => latency(num(1, 100), num(2, 10), Reader::Core).await,
        Some("latency-pgqd") => {
            let pgqd = PgqdPoll {
                period_ms: num(1, 1000),
                poll_ms: num(2, 10),
            };
            latency(num(3, 100), num(4, 10), Reader::Poll(pgqd)).await
        }
        Some("held") => {
            let who = match args.get(1).map(String::as_str) {
                Some("pgqd") => Reader::Poll(PgqdPoll {
                    period_ms: 10,
                    poll_ms: 10,
                }),
                _ => Reader::Consumer,
            };
            held(who, num(2, 1000), num(3, 10), num(4, 600), num(5, 40)).await
        }
        Some("idle") => idle(num(1, 10)).await,
        Some("many") => many(num(1, 200), num(2, 5), num(3, 30)).await,
        _ => {
            eprintln!(
                "usage: bench_ticker latency RATE SECS | latency-core RATE SECS | latency-pgqd PERIOD_MS POLL_MS RATE SECS \
                 | held ours|pgqd RATE PRE_SECS HOLD_SECS POST_SECS | idle SECS | many DBS QUEUES SECS"
            );
            std::process::exit(2);
        }
    }
}

/// The P4 anchor setup: pgqd as the ticker and a consumer polling on a timer.
#[derive(Clone, Copy)]
struct PgqdPoll {
    period_ms: u64,
    poll_ms: u64,
}

/// Who ticks and who reads in a P4 run.
#[derive(Clone, Copy)]
enum Reader {
    /// pgq-ticker, and pgq-consumer's `Consumer::run`.
    Consumer,
    /// pgq-ticker, and a minimal LISTEN consumer on pgq-core's functions.
    Core,
    /// pgqd at a period, and a consumer polling `next_batch` on a timer.
    Poll(PgqdPoll),
}

/// What a consumer collected: (send time µs, latency ms) per event and, for `PGQ_BENCH_SPLIT`,
/// per-event times.
type Collected = (Vec<(i64, f64)>, Vec<Recv>);

/// Database `name` in `cluster` with a lag-0 queue `lat` and its consumer `bench`, a pool of
/// `conns` connections, and who ticks it for `reader` (pgqd or pgq-ticker), running.
async fn lag0_setup(
    cluster: &Cluster,
    name: &str,
    conns: u32,
    reader: Reader,
) -> Res<(String, PgPool, QueueName, ConsumerName, support::Ticker)> {
    let url = private_db(cluster, name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(conns)
        .connect(&url)
        .await?;
    let queue = QueueName::new("lat")?;
    let consumer = ConsumerName::new("bench")?;
    pgq_core::create_queue(&pool, &queue).await?;
    pgq_core::register_consumer(&pool, &queue, &consumer).await?;
    sqlx::query("select pgq.set_queue_config('lat', 'ticker_max_lag', '0')")
        .execute(&pool)
        .await?;
    let ticker = match reader {
        Reader::Poll(p) => spawn_pgqd(cluster.port(), &format!("{}", p.period_ms as f64 / 1000.0)),
        Reader::Consumer | Reader::Core => spawn_ticker(&["--db", &url]),
    };
    Ok((url, pool, queue, consumer, ticker))
}

/// P4: producer → pgq-ticker (or pgqd) → consumer latency.
async fn latency(rate: u64, secs: u64, reader: Reader) -> Res<()> {
    let cluster = Cluster::start_private()?;
    let (_url, pool, queue, consumer, _ticker) = lag0_setup(&cluster, "lat", 4, reader).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Drain what is there.
    while let Some(b) = pgq_core::next_batch(&pool, &queue, &consumer).await? {
        pgq_core::finish_batch(&pool, b).await?;
    }

    let total = rate * secs;
    let split = matches!(reader, Reader::Core) && std::env::var_os("PGQ_BENCH_SPLIT").is_some();
    let deadline = Instant::now() + Duration::from_secs(secs + 10);
    let consumer_task = match reader {
        Reader::Consumer => tokio::spawn(run_loop_consumer(
            pool.clone(),
            queue.clone(),
            consumer.clone(),
            total,
            deadline,
        )),
        Reader::Core | Reader::Poll(_) => tokio::spawn(core_consumer(
            pool.clone(),
            queue.clone(),
            consumer.clone(),
            total,
            deadline,
            reader,
            split,
        )),
    };
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut producer = pool.acquire().await?;
    let mut committed = Vec::with_capacity(if split { total as usize } else { 0 });
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let sent = now_us();
        pgq_core::insert_event(&mut *producer, &queue, "t", &sent.to_string()).await?;
        if split {
            committed.push((sent, now_us()));
        }
    }
    let (got, trace) = consumer_task.await?.map_err(|e| e.to_string())?;
    let mut lat: Vec<f64> = got.iter().map(|g| g.1).collect();
    if split {
        print_split(&committed, &trace);
    }
    lat.sort_by(f64::total_cmp);
    let (who, key) = match reader {
        Reader::Consumer => (
            "pgq-ticker + pgq-consumer run loop".to_string(),
            "ours".to_string(),
        ),
        Reader::Core => (
            "pgq-ticker + minimal core consumer".to_string(),
            "ours_core".to_string(),
        ),
        Reader::Poll(p) => (
            format!(
                "pgqd {} ms + {} ms polling consumer",
                p.period_ms, p.poll_ms
            ),
            format!("pgqd{}ms", p.period_ms),
        ),
    };
    let lost = total as i64 - lat.len() as i64;
    println!(
        "P4 rate {rate} ev/s, {who}: sent {total}, received {}, lost {lost}; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!("RESULT p4.{key}.r{rate}.p50 {:.3} ms", pct(&lat, 0.5));
    println!("RESULT p4.{key}.r{rate}.p99 {:.3} ms", pct(&lat, 0.99));
    println!("RESULT p4.{key}.r{rate}.lost {lost} events");
    Ok(())
}

/// The latency of one received event, from the send time the producer put in its data.
fn event_latency_ms(ev: &Event, now: i64) -> Option<(i64, f64)> {
    let sent = ev.ev_data.as_deref()?.parse::<i64>().ok()?;
    Some((sent, (now - sent) as f64 / 1000.0))
}

/// pgq-consumer's run loop with its defaults (woken by the tick NOTIFY), until `total` events
/// arrived or `deadline`.
async fn run_loop_consumer(
    pool: PgPool,
    queue: QueueName,
    name: ConsumerName,
    total: u64,
    deadline: Instant,
) -> Result<Collected, Box<dyn std::error::Error + Send + Sync>> {
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let stop = CancellationToken::new();
    let consumer = Consumer::builder(pool, queue, name).build()?;
    let handler = handler_fn({
        let (lat, stop) = (lat.clone(), stop.clone());
        move |ev: Event| {
            let (lat, stop) = (lat.clone(), stop.clone());
            async move {
                if let Some(got) = event_latency_ms(&ev, now_us()) {
                    let mut lat = lat.lock().expect("latency list");
                    lat.push(got);
                    if lat.len() as u64 >= total {
                        stop.cancel();
                    }
                }
                Ok(())
            }
        }
    });
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(handler, stop).await }
    });
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep_until(deadline.into()) => stop.cancel(),
    }
    run.await??;
    let lat = std::mem::take(&mut *lat.lock().expect("latency list"));
    Ok((lat, Vec::new()))
}

/// A minimal consumer on pgq-core: LISTEN (or, for the pgqd anchors, a timer), then
/// `next_batch_info` + `get_batch_events` + `finish_batch` until no batch is left.
async fn core_consumer(
    pool: PgPool,
    queue: QueueName,
    consumer: ConsumerName,
    total: u64,
    deadline: Instant,
    reader: Reader,
    split: bool,
) -> Result<Collected, Box<dyn std::error::Error + Send + Sync>> {
    let mut listener = match reader {
        Reader::Poll(_) => None,
        _ => Some(pgq_core::tick_listener(&pool).await?),
    };
    let mut conn = pool.acquire().await?;
    let mut lat_ms = Vec::with_capacity(total as usize);
    let mut trace = Vec::with_capacity(if split { total as usize } else { 0 });
    while (lat_ms.len() as u64) < total && Instant::now() < deadline {
        if let Some(l) = listener.as_mut() {
            let _ = tokio::time::timeout(Duration::from_millis(100), l.recv()).await;
            // One pass over next_batch serves every tick announced so far (as pgq-consumer's
            // wakeup does): no empty next_batch per queued notification.
            while l.next_buffered().is_some() {}
        } else if let Reader::Poll(p) = reader {
            tokio::time::sleep(Duration::from_millis(p.poll_ms)).await;
        }
        loop {
            let asked = now_us();
            let Some(b) = pgq_core::next_batch_info(&mut *conn, &queue, &consumer).await? else {
                break;
            };
            let evs = pgq_core::get_batch_events(&mut *conn, b.batch_id).await?;
            let now = now_us();
            for ev in evs {
                if let Some((sent, ms)) = event_latency_ms(&ev, now) {
                    lat_ms.push((sent, ms));
                    if split {
                        trace.push(Recv {
                            sent,
                            tick: b.cur_tick_time.timestamp_micros(),
                            asked,
                            got: now,
                        });
                    }
                }
            }
            pgq_core::finish_batch(&mut *conn, b.batch_id).await?;
        }
    }
    Ok((lat_ms, trace))
}

/// One received event, for `PGQ_BENCH_SPLIT` (all times µs since the epoch).
struct Recv {
    sent: i64,
    tick: i64,
    asked: i64,
    got: i64,
}

/// `PGQ_BENCH_SPLIT=1`: split each event's latency into insert+commit (producer round trip),
/// detection (tick time − commit), wakeup (consumer asks for the batch − tick time) and
/// consumer round trips (events in hand − asked), and show the slowest 1%.
fn print_split(committed: &[(i64, i64)], trace: &[Recv]) {
    let done: std::collections::HashMap<i64, i64> = committed.iter().copied().collect();
    if let Some(path) = std::env::var_os("PGQ_BENCH_SPLIT_CSV") {
        let csv: String = trace
            .iter()
            .map(|r| {
                let d = done.get(&r.sent).copied().unwrap_or(0);
                format!("{},{d},{},{},{}\n", r.sent, r.tick, r.asked, r.got)
            })
            .collect();
        let _ = std::fs::write(path, csv);
    }
    let mut rows: Vec<[f64; 5]> = trace
        .iter()
        .filter_map(|r| {
            let d = *done.get(&r.sent)?;
            let ms = |a: i64, b: i64| (b - a) as f64 / 1000.0;
            Some([
                ms(r.sent, r.got),
                ms(r.sent, d),
                ms(d, r.tick),
                ms(r.tick, r.asked),
                ms(r.asked, r.got),
            ])
        })
        .collect();
    let names = [
        "total",
        "insert+commit",
        "commit->tick",
        "tick->asked",
        "asked->got",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        eprintln!(
            "  split {n:>14}: p50 {:7.2} p90 {:7.2} p99 {:7.2} max {:7.2} ms",
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    rows.sort_by(|a, b| b[0].total_cmp(&a[0]));
    let slow = &rows[..rows.len().div_ceil(100)];
    let mut mean = [0.0; 5];
    for r in slow {
        for i in 0..5 {
            mean[i] += r[i] / slow.len() as f64;
        }
    }
    eprintln!(
        "  slowest 1% mean: total {:.2}, insert+commit {:.2}, commit->tick {:.2}, tick->asked {:.2}, asked->got {:.2} ms",
        mean[0], mean[1], mean[2], mean[3], mean[4]
    );
    // Where in the second the slowest events were sent (clustering around the 1 s round).
    let mut slow_sent: Vec<i64> = trace
        .iter()
        .filter(|r| (r.got - r.sent) as f64 / 1000.0 >= slow.last().map_or(0.0, |r| r[0]))
        .map(|r| r.sent)
        .collect();
    slow_sent.sort_unstable();
    let phases: Vec<String> = slow_sent
        .iter()
        .map(|s| format!("{}.{:03}", (s / 1_000_000) % 100, (s / 1000) % 1000))
        .collect();
    eprintln!("  slowest 1% sent at (s.ms): {}", phases.join(" "));
}

/// Counters of the database at one moment (P9).
#[derive(Default, Clone)]
struct DbCounters {
    at: f64,
    sub_upd: i64,
    sub_dead: i64,
    ticks: i64,
    /// function name → (calls, total ms)
    funcs: std::collections::BTreeMap<String, (i64, f64)>,
}

async fn db_counters(pool: &PgPool, t0: Instant) -> Res<DbCounters> {
    let (sub_upd, sub_dead): (i64, i64) = sqlx::query_as(
        "select n_tup_upd, n_dead_tup from pg_stat_user_tables \
          where schemaname = 'pgq' and relname = 'subscription'",
    )
    .fetch_one(pool)
    .await?;
    let ticks: i64 = sqlx::query_scalar("select count(*) from pgq.tick")
        .fetch_one(pool)
        .await?;
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "select schemaname || '.' || funcname, sum(calls)::int8, sum(total_time)::float8 \
           from pg_stat_user_functions where schemaname in ('pgq', 'pgq_rs') \
          group by 1 order by 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(DbCounters {
        at: t0.elapsed().as_secs_f64(),
        sub_upd,
        sub_dead,
        ticks,
        funcs: rows.into_iter().map(|(n, c, t)| (n, (c, t))).collect(),
    })
}

/// What happened between two counter samples, one line.
fn counters_delta(a: &DbCounters, b: &DbCounters) -> String {
    let secs = (b.at - a.at).max(1e-3);
    let mut out = format!(
        "subscription updates {:.0}/s (dead {}), ticks {:.0}/s",
        (b.sub_upd - a.sub_upd) as f64 / secs,
        b.sub_dead,
        (b.ticks - a.ticks) as f64 / secs
    );
    for (name, (c1, t1)) in &b.funcs {
        let (c0, t0) = a.funcs.get(name).copied().unwrap_or((0, 0.0));
        let calls = c1 - c0;
        if calls > 0 && !name.contains("seq_") && !name.contains("quote_") {
            out.push_str(&format!(
                "; {name} {:.0}/s {:.3} ms",
                calls as f64 / secs,
                (t1 - t0) / calls as f64
            ));
        }
    }
    out
}

/// P9: the P4 setup at RATE ev/s while a transaction holds the xmin horizon for `hold` seconds.
async fn held(reader: Reader, rate: u64, pre: u64, hold: u64, post: u64) -> Res<()> {
    let cluster = Cluster::start_private()?;
    {
        let mut admin = PgConnection::connect(&cluster.url("postgres")).await?;
        for q in [
            "alter system set track_functions = 'all'",
            "select pg_reload_conf()",
        ] {
            sqlx::query(q).execute(&mut admin).await?;
        }
        // PGQ_BENCH_EXPLAIN=MS: auto_explain (nested, analyze, buffers) of statements slower
        // than MS, into the cluster's log, copied to target/p9-explain.log at the end.
        if let Ok(ms) = std::env::var("PGQ_BENCH_EXPLAIN") {
            for q in [
                "load 'auto_explain'".to_string(),
                "alter system set session_preload_libraries = 'auto_explain'".into(),
                format!(
                    "alter system set auto_explain.log_min_duration = {}",
                    ms.parse::<u32>()?
                ),
                "alter system set auto_explain.log_nested_statements = on".into(),
                "alter system set auto_explain.log_analyze = on".into(),
                "alter system set auto_explain.log_buffers = on".into(),
                "select pg_reload_conf()".into(),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(q))
                    .execute(&mut admin)
                    .await?;
            }
        }
        admin.close().await?;
    }
    let (url, pool, queue, consumer, _ticker) = lag0_setup(&cluster, "held", 6, reader).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Some(b) = pgq_core::next_batch(&pool, &queue, &consumer).await? {
        pgq_core::finish_batch(&pool, b).await?;
    }
    let secs = pre + hold + post;
    let total = rate * secs;
    let grace = Duration::from_secs(10);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs) + grace;
    let consumer_task = match reader {
        Reader::Consumer => tokio::spawn(run_loop_consumer(
            pool.clone(),
            queue.clone(),
            consumer.clone(),
            total,
            deadline,
        )),
        _ => tokio::spawn(core_consumer(
            pool.clone(),
            queue.clone(),
            consumer.clone(),
            total,
            deadline,
            reader,
            false,
        )),
    };
    // The horizon holder: a REPEATABLE READ transaction that has taken its snapshot.
    let holder = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut c = PgConnection::connect(&url).await?;
            tokio::time::sleep_until((start + Duration::from_secs(pre)).into()).await;
            sqlx::query("begin isolation level repeatable read")
                .execute(&mut c)
                .await?;
            sqlx::query("select count(*) from pgq.queue")
                .execute(&mut c)
                .await?;
            tokio::time::sleep_until((start + Duration::from_secs(pre + hold)).into()).await;
            sqlx::query("commit").execute(&mut c).await?;
            c.close().await?;
            Ok::<_, sqlx::Error>(())
        })
    };
    // Counters every 10 s and at the phase boundaries.
    let sampler = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut marks: Vec<u64> = (0..=secs).step_by(10).collect();
            marks.extend([pre, pre + hold, secs]);
            marks.sort_unstable();
            marks.dedup();
            let mut out = Vec::new();
            for m in marks {
                tokio::time::sleep_until((start + Duration::from_millis(m * 1000 + 500)).into())
                    .await;
                if let Ok(c) = db_counters(&pool, start).await {
                    out.push((m, c));
                }
            }
            out
        })
    };
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut producer = pool.acquire().await?;
    let t0_us = now_us();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let sent = now_us();
        pgq_core::insert_event(&mut *producer, &queue, "t", &sent.to_string()).await?;
    }
    drop(producer);
    let stop_us = now_us();
    let (got, _) = consumer_task.await?.map_err(|e| e.to_string())?;
    holder.await??;
    let samples = sampler.await?;
    if std::env::var_os("PGQ_BENCH_EXPLAIN").is_some()
        && let Some(dir) = cluster.data_dir()
    {
        let log = dir.parent().map(|d| d.join("server.log"));
        if let Some(log) = log {
            let _ = std::fs::copy(&log, "target/p9-explain.log");
        }
    }
    let (who, key) = match reader {
        Reader::Poll(_) => ("pgqd 10 ms + 10 ms polling consumer", "pgqd10ms"),
        _ => ("pgq-ticker + pgq-consumer run loop", "ours"),
    };
    let at = |s: u64| t0_us + (s as i64) * 1_000_000;
    let phases = [
        ("before", at(0), at(pre)),
        ("held", at(pre), at(pre + hold)),
        ("after30", at(pre + hold), at(pre + hold + 30)),
        ("after", at(pre + hold + 30), i64::MAX),
    ];
    println!("P9 rate {rate} ev/s, horizon held {hold} s after {pre} s, {post} s after; {who}:");
    for (name, from, to) in phases {
        let mut v: Vec<f64> = got
            .iter()
            .filter(|g| g.0 >= from && g.0 < to)
            .map(|g| g.1)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        println!(
            "  {name:>8}: {:6} events, p50 {:8.2} ms, p99 {:8.2} ms, max {:8.2} ms",
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
        println!("RESULT p9.{key}.{name}.p50 {:.3} ms", pct(&v, 0.5));
        println!("RESULT p9.{key}.{name}.p99 {:.3} ms", pct(&v, 0.99));
    }
    // The held window in 10 s slices, to see a slow slide as well as a cliff.
    let mut slices = Vec::new();
    let mut s = pre;
    while s < pre + hold {
        let mut v: Vec<f64> = got
            .iter()
            .filter(|g| g.0 >= at(s) && g.0 < at((s + 10).min(pre + hold)))
            .map(|g| g.1)
            .collect();
        v.sort_by(f64::total_cmp);
        slices.push(format!("{:.0}", pct(&v, 0.99)));
        s += 10;
    }
    println!("  held, p99 per 10 s (ms): {}", slices.join(" "));
    let undelivered = total as i64 - got.len() as i64;
    // At the producer's stop: events sent but not yet received, and the oldest one's age.
    let behind: Vec<i64> = got
        .iter()
        .filter(|g| g.0 + (g.1 * 1000.0) as i64 > stop_us)
        .map(|g| g.0)
        .collect();
    let backlog = behind.len() as i64 + undelivered;
    let lag_s = behind
        .iter()
        .min()
        .map_or(0.0, |s| (stop_us - s) as f64 / 1e6);
    println!(
        "  undelivered {}s after the producer stopped: {undelivered}; at its stop {backlog} events \
         were not delivered yet, the oldest sent {lag_s:.2} s before",
        grace.as_secs()
    );
    println!("RESULT p9.{key}.undelivered {undelivered} events");
    println!("RESULT p9.{key}.lag_at_end {lag_s:.3} s");
    for w in samples.windows(2) {
        let ((m0, a), (m1, b)) = (&w[0], &w[1]);
        let phase = if *m1 <= pre {
            "before"
        } else if *m1 <= pre + hold {
            "held"
        } else {
            "after"
        };
        println!("  db {m0:>4}-{m1:<4}s {phase:>6}: {}", counters_delta(a, b));
    }
    if let (Some((_, a)), Some((_, b))) = (
        samples.iter().find(|(m, _)| *m == pre),
        samples.iter().find(|(m, _)| *m == pre + hold),
    ) {
        let secs = (b.at - a.at).max(1e-3);
        println!(
            "RESULT p9.{key}.held.sub_updates_per_s {:.1} updates/s",
            (b.sub_upd - a.sub_upd) as f64 / secs
        );
    }
    Ok(())
}

/// CPU of the backends whose application_name is `app` (pids looked up now).
async fn backends_cpu(pool: &PgPool, app: &str) -> Res<Vec<(u32, f64)>> {
    let pids: Vec<i32> =
        sqlx::query_scalar("select pid from pg_stat_activity where application_name = $1")
            .bind(app)
            .fetch_all(pool)
            .await?;
    Ok(pids
        .into_iter()
        .map(|p| (p as u32, cpu_secs(p as u32)))
        .collect())
}

/// CPU used by a process and its database sessions over `secs`.
async fn measure(pool: &PgPool, pid: u32, app: &str, secs: u64) -> Res<f64> {
    let before = backends_cpu(pool, app).await?;
    let p0 = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let p1 = cpu_secs(pid);
    let mut backend = 0.0;
    for (bpid, c0) in &before {
        backend += cpu_secs(*bpid) - c0;
    }
    Ok((p1 - p0 + backend) / secs as f64 * 100.0)
}

/// The idle cost of the fast path vs pgqd at 10 ms.
async fn idle(secs: u64) -> Res<()> {
    let cluster = Cluster::start_private()?;
    let url = private_db(&cluster, "idle").await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    pgq_core::create_queue(&pool, &QueueName::new("fast")?).await?;
    sqlx::query("select pgq.set_queue_config('fast', 'ticker_max_lag', '0')")
        .execute(&pool)
        .await?;
    let t = spawn_ticker(&["--db", &url]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours = measure(&pool, t.pid(), "pgq-ticker", secs).await?;
    drop(t);
    let p = spawn_pgqd(cluster.port(), "0.01");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let theirs = measure(&pool, p.pid(), "pgqd", secs).await?;
    drop(p);
    println!(
        "idle, one lag-0 queue: pgq-ticker (fast poll 2 ms) {ours:.2}% of a core; pgqd ticker_period 10 ms {theirs:.2}% (process + its sessions)"
    );
    println!("RESULT idle.ours_cpu {ours:.3} %");
    println!("RESULT idle.pgqd10ms_cpu {theirs:.3} %");
    Ok(())
}

/// CPU of the postmaster's children and `extra` over `secs`, sampling the worst tick age once a
/// second. Returns (cpu %, worst tick age seconds, p99 of per-sample worst ages).
async fn run_many(pool: &PgPool, postmaster: u32, extra: u32, secs: u64) -> Res<(f64, f64, f64)> {
    let children = || -> Vec<(u32, f64)> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| *p == postmaster || *p == extra || ppid(*p) == Some(postmaster))
            .map(|p| (p, cpu_secs(p)))
            .collect()
    };
    let before = children();
    let start = Instant::now();
    let mut worst = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut w: f64 = 0.0;
        // The sampler task refreshes pgq_bench_ages (worst tick age per database).
        let ages: Vec<f64> = sqlx::query_scalar("select age from pgq_bench_ages")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
        for a in ages {
            w = w.max(a);
        }
        worst.push(w);
    }
    let after = children();
    let mut cpu = 0.0;
    let own = after.iter().find(|(p, _)| *p == extra).map_or(0.0, |a| a.1)
        - before
            .iter()
            .find(|(p, _)| *p == extra)
            .map_or(0.0, |b| b.1);
    eprintln!(
        "  (ticker process alone: {:.1}% of a core)",
        own / start.elapsed().as_secs_f64() * 100.0
    );
    for (p, c1) in &after {
        if let Some((_, c0)) = before.iter().find(|(q, _)| q == p) {
            cpu += c1 - c0;
        } else {
            cpu += c1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut sorted = worst.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((
        cpu / elapsed * 100.0,
        sorted.last().copied().unwrap_or(f64::NAN),
        pct(&sorted, 0.99),
    ))
}

/// P5: many databases, ours then pgqd.
async fn many(dbs: u64, queues: u64, secs: u64) -> Res<()> {
    let cluster = Cluster::start_private()?;
    {
        let mut admin = PgConnection::connect(&cluster.url("postgres")).await?;
        sqlx::query("alter system set max_connections = 1200")
            .execute(&mut admin)
            .await?;
        admin.close().await?;
    }
    cluster.stop_fast()?;
    cluster.start()?;
    let tpl = private_db(&cluster, "bench_tpl").await?;
    {
        let mut c = PgConnection::connect(&tpl).await?;
        for i in 0..queues {
            let q = QueueName::new(format!("q{i}"))?;
            pgq_core::create_queue(&mut c, &q).await?;
            // Every queue wants a tick every round (pgq ticks an idle queue once its newest
            // tick is older than both half of ticker_max_lag and ticker_idle_period), so the
            // tick age shows how far behind the ticker falls, not pgq's idle back-off.
            for (key, value) in [
                ("ticker_max_lag", "1 second"),
                ("ticker_idle_period", "500 ms"),
            ] {
                sqlx::query("select pgq.set_queue_config($1, $2, $3)")
                    .bind(q.as_str())
                    .bind(key)
                    .bind(value)
                    .execute(&mut c)
                    .await?;
            }
        }
        c.close().await?;
    }
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await?;
    let mut names = Vec::new();
    for i in 0..dbs {
        let name = format!("bench_{i:03}");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create database {name} template bench_tpl"
        )))
        .execute(&mut admin)
        .await?;
        names.push(name);
    }
    sqlx::query("alter database bench_tpl with allow_connections false")
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    // Worst tick age per database, read through one kept connection per database, into a table
    // in "postgres" that the measuring loop reads.
    let pools: Vec<PgPool> = {
        let mut v = Vec::new();
        for n in &names {
            v.push(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&cluster.url(n))
                    .await?,
            );
        }
        v
    };
    let sampler_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url("postgres"))
        .await?;
    sqlx::query("create table pgq_bench_ages (age float8)")
        .execute(&sampler_pool)
        .await?;
    let sampler = {
        let sampler_pool = sampler_pool.clone();
        tokio::spawn(async move {
            loop {
                let mut ages = Vec::with_capacity(pools.len());
                for p in &pools {
                    let a: Option<f64> = sqlx::query_scalar(
                        "select max(age) from (select extract(epoch from now() - max(tick_time))::float8 as age \
                           from pgq.tick group by tick_queue) t",
                    )
                    .fetch_one(p)
                    .await
                    .ok()
                    .flatten();
                    ages.push(a.unwrap_or(f64::NAN));
                }
                let _ = sqlx::query("delete from pgq_bench_ages")
                    .execute(&sampler_pool)
                    .await;
                let _ = sqlx::query("insert into pgq_bench_ages select unnest($1::float8[])")
                    .bind(&ages)
                    .execute(&sampler_pool)
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let postmaster: u32 =
        std::fs::read_to_string(cluster.data_dir().expect("private").join("postmaster.pid"))?
            .lines()
            .next()
            .unwrap_or("0")
            .trim()
            .parse()?;

    let base = cluster.url("postgres");
    let t = spawn_ticker(&["--discover", "--db", &base]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (ours_cpu, ours_worst, ours_p99) =
        run_many(&sampler_pool, postmaster, t.pid(), secs).await?;
    drop(t);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = spawn_pgqd(cluster.port(), "1");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (pgqd_cpu, pgqd_worst, pgqd_p99) =
        run_many(&sampler_pool, postmaster, p.pid(), secs).await?;
    drop(p);
    sampler.abort();
    println!(
        "P5 {dbs} databases x {queues} queues, {secs}s each, CPU = ticker process + whole cluster:\n  \
         pgq-ticker: CPU {ours_cpu:.1}% of a core, worst tick age {ours_worst:.2}s (p99 of samples {ours_p99:.2}s)\n  \
         pgqd:       CPU {pgqd_cpu:.1}% of a core, worst tick age {pgqd_worst:.2}s (p99 of samples {pgqd_p99:.2}s)"
    );
    println!("RESULT p5.dbs {dbs} databases");
    println!("RESULT p5.queues {queues} queues");
    println!("RESULT p5.ours_cpu {ours_cpu:.3} %");
    println!("RESULT p5.ours_worst_age {ours_worst:.3} s");
    println!("RESULT p5.pgqd_cpu {pgqd_cpu:.3} %");
    println!("RESULT p5.pgqd_worst_age {pgqd_worst:.3} s");
    Ok(())
}
