//! Failover: `pgq tail --follow` on a connection string with two hosts and
//! `target_session_attrs=read-write`. The primary stops, the standby is promoted: tail reconnects
//! to the new primary and prints every event committed there within 5 s of the promotion. (The
//! ticker and a consumer run loop through the same failover: the ticker's test tree,
//! `failover.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgq_core::connect::ConnectTarget;
use pgq_testkit::{Arrivals, DEADLINE, Failover, c, numbered_events, q};
use serde_json::Value;
use sqlx::Connection as _;

/// What the issue promises: service on the new primary within this long after the promotion.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_reconnects_to_the_new_primary() {
    let fo = Failover::start(q("tail_fo"), c("tail_fo_c")).await;
    let (db, queue, consumer, both) = (&fo.db, &fo.queue, &fo.consumer, &fo.both);

    // A ticker of our own (the binary is tested in its own tree): every 100 ms, on whichever
    // host accepts writes.
    let target = ConnectTarget::parse(both).unwrap();
    let ticking = tokio::spawn(async move {
        let mut conn = None;
        loop {
            if conn.is_none() {
                conn = target.connect().await.ok();
            }
            if let Some(c) = conn.as_mut()
                && pgq_core::ticker(&mut *c).await.is_err()
            {
                conn = None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args([
            "--db",
            both,
            "--json",
            "tail",
            queue.as_str(),
            consumer.as_str(),
        ])
        // Longer than the whole failover: tick notifications, not polling, must wake tail.
        .args(["--follow", "--poll-interval", "60s"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // When tail printed each event.
    let seen = Arrivals::default();
    let stdout = child.stdout.take().unwrap();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            sink.record(v["data"].as_str().unwrap_or_default());
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let log_sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_sink.lock().unwrap().push(line);
        }
    });

    seen.send_and_wait(
        db.pool(),
        queue,
        "before",
        20,
        "tail did not print the events on the primary",
        || log.lock().unwrap().join("\n"),
    )
    .await;

    let events = |prefix: &str| numbered_events("fo", prefix, 20);
    let promoted = fo.fail_over().await;
    let mut conn = sqlx::PgConnection::connect(&fo.standby_url())
        .await
        .unwrap();
    pgq_core::insert_events(&mut conn, queue, &events("after"))
        .await
        .unwrap();

    let after = seen.watch("after", 20);
    let printed_at = loop {
        if let Some(at) = after() {
            break at;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "tail exited ({status}) after the failover\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        if promoted.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!(
                "tail did not print the events committed on the new primary ({} lines)\n{}",
                seen.len(),
                log.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delivery = printed_at.duration_since(promoted);
    eprintln!(
        "failover: tail printed every event committed on the new primary {:.2}s after the \
         promotion",
        delivery.as_secs_f64()
    );
    let log_text = log.lock().unwrap().join("\n");
    assert!(log_text.contains("reconnected"), "{log_text}");
    assert!(
        delivery <= FAILOVER_BUDGET,
        "tail took {delivery:?} after the promotion\n{log_text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    ticking.abort();
    let _ = conn.close().await;
}
