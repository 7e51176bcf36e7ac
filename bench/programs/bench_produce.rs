//! Side-by-side producer measurements behind `scripts/bench-produce` (build with `--release`):
//!
//! - **P1**: `Producer::copy` of N events with 100-byte payloads vs raw `psql \copy` of the same
//!   rows into an equivalent plain table (the event table's columns and defaults, a sequence for
//!   `ev_id`, an index on `ev_txid`). Goal: ≥ 0.85×.
//! - **P2**: `Producer::send_batch` vs a loop of single `Producer::send`s, both in one
//!   transaction. Goal: ≥ 10×. Also measured: single sends, a transaction each.
//!
//! Both run on one private PostgreSQL cluster (pgq-testkit), alternating, several runs each;
//! medians are printed. Arguments: `[copy_rows] [send_rows] [runs]` (default 200000 5000 5).
//!
//! Besides the human lines, each figure is printed as `RESULT <key> <value> <unit>` for
//! `scripts/bench-compare`. With `PGQ_BENCH_PEERS` naming `bench/peers/peers.py`, pgqueue's bulk
//! path (`bulk_insert_events`, PyPI 0.6) is measured on the same cluster too.

use std::io::Write as _;
use std::time::{Duration, Instant};

use pgq::core::sqlx::{self, Executor, PgPool};
use pgq::core::{NewEvent, QueueName};
use pgq::producer::Producer;

const PAYLOAD: usize = 100;

fn event(i: u64) -> NewEvent {
    NewEvent::new("bench", format!("{i:0>PAYLOAD$}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.0} rows/s", n as f64 / d.as_secs_f64())
}

/// A machine-readable result line for `scripts/bench-compare`.
fn result(key: &str, d: Duration) {
    println!("RESULT {key} {:.3} ms", d.as_secs_f64() * 1e3);
}

/// Run the Python peer script named by `PGQ_BENCH_PEERS` (if set) with Debian's python3; its
/// output (with its own `RESULT` lines) goes to our stdout.
fn peer(args: &[&str]) {
    let Some(script) = std::env::var_os("PGQ_BENCH_PEERS") else {
        return;
    };
    let python = std::env::var("PGQ_BENCH_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let status = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .status()
        .expect("run the Python peer (bench/peers/peers.py)");
    assert!(status.success(), "the Python peer failed: {args:?}");
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("numeric argument"))
        .unwrap_or(default)
}

/// Truncate the queue's current event table (as the superuser) so every run starts alike.
async fn empty_event_table(pool: &PgPool, queue: &QueueName) -> Result<(), sqlx::Error> {
    let table = pgq::core::current_event_table(pool, queue)
        .await
        .expect("current event table");
    let sql = format!("truncate {}", pgq::core::quote_fqname(&table));
    pool.execute(sqlx::AssertSqlSafe(sql)).await?;
    Ok(())
}

/// Time one `psql \copy` of `file` into the raw table; psql's own `\timing` of the statement.
fn psql_copy(url: &str, file: &std::path::Path) -> Duration {
    let copy = format!(
        "\\copy bench_raw (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) from '{}'",
        file.display()
    );
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            "\\timing on",
            "-c",
            &copy,
        ])
        .output()
        .expect("run psql (is the PostgreSQL client installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Time: "))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timing in psql output: {stdout}"));
    Duration::from_secs_f64(ms / 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let copy_rows = arg(1, 200_000);
    let send_rows = arg(2, 5_000);
    let runs = arg(3, 5) as usize;

    let db = pgq_testkit::TestDb::new().await;
    let pool = db.pool().clone();
    let url = db.url();
    println!(
        "private cluster on 127.0.0.1:{}; {runs} runs each, medians",
        db.cluster().port()
    );
    let version: String = sqlx::query_scalar("select version()")
        .fetch_one(&pool)
        .await?;
    println!("INFO pg_version {version}");
    let queue = QueueName::new("bench_produce")?;
    pgq::core::create_queue(&pool, &queue).await?;
    let producer = Producer::new(queue.clone());

    // The baseline table: pgq's event table shape, without pgq.
    pool.execute(
        "create sequence bench_raw_seq; \
         create table bench_raw (like pgq.event_template including defaults); \
         alter table bench_raw alter column ev_id set default nextval('bench_raw_seq'); \
         create index bench_raw_txid_idx on bench_raw (ev_txid)",
    )
    .await?;
    // The same rows as COPY text, for psql.
    let mut file = tempfile::NamedTempFile::new()?;
    {
        let mut w = std::io::BufWriter::new(file.as_file_mut());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for i in 0..copy_rows {
            let ev = event(i);
            writeln!(
                w,
                "{now}\t{}\t{}\t\\N\t\\N\t\\N\t\\N",
                ev.ev_type, ev.ev_data
            )?;
        }
        w.flush()?;
    }

    // P1: COPY vs psql \copy.
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let ours_first = run % 2 == 0;
        for step in 0..2 {
            if (step == 0) == ours_first {
                empty_event_table(&pool, &queue).await?;
                let started = Instant::now();
                let mut tx = pool.begin().await?;
                let n = producer
                    .copy_iter(&mut tx, (0..copy_rows).map(event))
                    .await?;
                tx.commit().await?;
                ours.push(started.elapsed());
                assert_eq!(n, copy_rows);
            } else {
                pool.execute("truncate bench_raw").await?;
                raw.push(psql_copy(&url, file.path()));
                let n: i64 = sqlx::query_scalar("select count(*) from bench_raw")
                    .fetch_one(&pool)
                    .await?;
                assert_eq!(n as u64, copy_rows);
            }
        }
    }
    let (ours, raw) = (median(ours), median(raw));
    let p1 = raw.as_secs_f64() / ours.as_secs_f64();
    println!("RESULT p1.rows {copy_rows} rows");
    result("p1.ours_copy", ours);
    result("p1.psql_copy", raw);
    println!("P1: {copy_rows} events, {PAYLOAD}-byte payloads");
    println!(
        "    psql \\copy (raw table + txid index) {raw:>10.1?}  {}",
        rate(copy_rows, raw)
    );
    println!(
        "    Producer::copy                      {ours:>10.1?}  {}",
        rate(copy_rows, ours)
    );
    println!(
        "    ratio copy / psql = {p1:.2}x (goal >= 0.85x) {}",
        if p1 >= 0.85 { "ok" } else { "BELOW GOAL" }
    );
    // pgqueue's bulk path into its own queue on the same cluster.
    let peer_queue = QueueName::new("bench_pgqueue")?;
    if std::env::var_os("PGQ_BENCH_PEERS").is_some() {
        pgq::core::create_queue(&pool, &peer_queue).await?;
        println!("    pgqueue bulk_insert_events (PyPI 0.6, psycopg2 workaround):");
        peer(&[
            "pgqueue-bulk",
            &url,
            peer_queue.as_str(),
            &copy_rows.to_string(),
            &runs.to_string(),
        ]);
    }

    // P2: send_batch vs a loop of single sends, each in one transaction (and COPY, for scale).
    let events: Vec<NewEvent> = (0..send_rows).map(event).collect();
    // And single sends each in a transaction of its own (a fifth as many: commits dominate).
    let tx_rows = (send_rows / 5).max(1);
    let (mut single, mut batch, mut copied, mut per_tx) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        for step in 0..4 {
            empty_event_table(&pool, &queue).await?;
            let started = Instant::now();
            if (step + run) % 4 == 3 {
                for ev in &events[..tx_rows as usize] {
                    let mut tx = pool.begin().await?;
                    producer.send(&mut *tx, ev).await?;
                    tx.commit().await?;
                }
                per_tx.push(started.elapsed());
                continue;
            }
            let mut tx = pool.begin().await?;
            match (step + run) % 4 {
                0 => {
                    producer.send_batch(&mut *tx, &events).await?;
                    tx.commit().await?;
                    batch.push(started.elapsed());
                }
                1 => {
                    for ev in &events {
                        producer.send(&mut *tx, ev).await?;
                    }
                    tx.commit().await?;
                    single.push(started.elapsed());
                }
                _ => {
                    producer.copy_iter(&mut tx, events.iter().cloned()).await?;
                    tx.commit().await?;
                    copied.push(started.elapsed());
                }
            }
        }
    }
    let (single, batch, copied, per_tx) = (
        median(single),
        median(batch),
        median(copied),
        median(per_tx),
    );
    let p2 = single.as_secs_f64() / batch.as_secs_f64();
    println!("RESULT p2.rows {send_rows} rows");
    println!("RESULT p2.tx_rows {tx_rows} rows");
    result("p2.send_loop", single);
    result("p2.send_batch", batch);
    result("p2.copy", copied);
    result("p2.send_per_tx", per_tx);
    println!("P2: {send_rows} events in one transaction");
    println!(
        "    loop of send                        {single:>10.1?}  {}",
        rate(send_rows, single)
    );
    println!(
        "    send_batch (pgq_writer)             {batch:>10.1?}  {}",
        rate(send_rows, batch)
    );
    println!(
        "    copy (pgq_admin), for scale         {copied:>10.1?}  {}  ({:.1}x the send loop)",
        rate(send_rows, copied),
        single.as_secs_f64() / copied.as_secs_f64()
    );
    println!(
        "    {tx_rows} sends, a transaction each    {per_tx:>10.1?}  {}",
        rate(tx_rows, per_tx)
    );
    println!(
        "    ratio send_batch / send loop = {p2:.1}x (goal >= 10x) {}",
        if p2 >= 10.0 { "ok" } else { "BELOW GOAL" }
    );
    Ok(())
}
