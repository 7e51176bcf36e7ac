//! `pgq status`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pgq_testkit::{Cluster, TestDb};
use serde_json::Value;

use crate::util::{exec, fails, json, ok, pgq, scalar};

fn warnings(s: &Value) -> Vec<(String, Option<String>, Option<String>)> {
    s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap().to_owned(),
                w["queue_name"].as_str().map(str::to_owned),
                w["consumer_name"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn healthy_database() {
    let db = TestDb::new().await;
    let s = json(&db, &["status"]);
    assert!(s["pgq_version"].as_str().unwrap().starts_with("3.5"), "{s}");
    assert!(s["schema_version"].is_i64());
    assert_eq!(s["ticker_alive"], Value::Null);
    assert_eq!(s["queues"], serde_json::json!([]));
    assert!(warnings(&s).is_empty(), "{s}");
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    ok(&db, &["send", "q", "--type", "t", "--data", "d"]);
    // A ticker runs: a session holds pgq-ticker's lock (what pgq-ticker does).
    let ticker = hold_ticker_lock(&db).await;
    let s = json(&db, &["status"]);
    assert_eq!(s["ticker_alive"], true, "{s}");
    assert_eq!(s["queues"][0]["queue_name"], "q");
    assert_eq!(s["queues"][0]["consumers"], 1);
    assert_eq!(s["consumers"][0]["consumer_name"], "c");
    assert!(s["consumers"][0]["pending_events"].is_i64());
    assert!(warnings(&s).is_empty(), "{s}");
    let text = ok(&db, &["status"]);
    assert!(
        text.contains("ticker alive") && !text.contains("WARNING"),
        "{text}"
    );
    ok(&db, &["status", "--check"]);
    drop(ticker);
}

/// A connection holding pgq-ticker's advisory lock, as a running ticker does.
async fn hold_ticker_lock(db: &TestDb) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    assert!(
        pgq_core::try_ticker_lock(&mut conn, pgq_core::TICKER_LOCK_KEY)
            .await
            .unwrap()
    );
    conn
}

/// No ticker runs, and the tick `create_queue` wrote does not count as one: a lag-0 queue with
/// new events and an old tick gets `no_ticker` and `tick_overdue`, and `--check` exits 3.
#[tokio::test]
async fn a_fresh_queue_without_a_ticker_is_a_warning() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "lag0", "--ticker-max-lag", "0s"]);
    let s = json(&db, &["status"]);
    assert_eq!(s["ticker_alive"], false, "{s}");
    assert!(
        warnings(&s).contains(&("no_ticker".into(), None, None)),
        "{s}"
    );
    fails(&db, &["status", "--check"], 3);
    for i in 0..5 {
        ok(
            &db,
            &["send", "lag0", "--type", "t", "--data", &i.to_string()],
        );
    }
    exec(
        &db,
        "update pgq.tick set tick_time = now() - interval '48 seconds'",
    )
    .await;
    let s = json(&db, &["status"]);
    let w = warnings(&s);
    assert!(
        w.contains(&("tick_overdue".into(), Some("lag0".into()), None)),
        "{w:?}"
    );
    // With a ticker running, only the overdue tick remains.
    let ticker = hold_ticker_lock(&db).await;
    let s = json(&db, &["status"]);
    assert_eq!(s["ticker_alive"], true);
    let w = warnings(&s);
    assert!(!w.iter().any(|w| w.0 == "no_ticker"), "{w:?}");
    assert!(w.iter().any(|w| w.0 == "tick_overdue"), "{w:?}");
    drop(ticker);
}

#[tokio::test]
async fn warns_about_paused_queues_and_a_stopped_ticker() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "paused"]);
    ok(&db, &["queue", "create", "stale"]);
    ok(&db, &["queue", "pause", "paused"]);
    // The newest tick of the ticked queue is two hours old: no ticker is running.
    exec(
        &db,
        "update pgq.tick set tick_time = now() - interval '2 hours'",
    )
    .await;
    let s = json(&db, &["status"]);
    let w = warnings(&s);
    assert!(
        w.contains(&("queue_paused".into(), Some("paused".into()), None)),
        "{w:?}"
    );
    assert!(w.contains(&("no_ticker".into(), None, None)), "{w:?}");
    assert_eq!(s["ticker_alive"], false);
    let text = ok(&db, &["status"]);
    assert!(text.contains("WARNING: no ticker is running"), "{text}");
    assert!(text.contains("pgq queue resume paused"), "{text}");
    // --check: the same report, and exit status 3 for a monitoring script.
    let o = pgq(&db, &["status", "--check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("WARNING: no ticker is running"), "{out}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // --check cannot watch.
    fails(&db, &["status", "--check", "--watch"], 2);
}

#[tokio::test]
async fn names_the_consumer_holding_back_rotation() {
    // A cluster of its own: other tests' open transactions (txids are cluster-wide) would hold a
    // new tick's snapshot back and rightly keep rotation waiting, so on the shared cluster this
    // test could only retry until it passes, which would hide a rotation bug too.
    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    ok(&db, &["queue", "create", "q", "--rotation-period", "1s"]);
    ok(&db, &["consumer", "register", "q", "slow"]);
    // The last rotation was long ago: rotation is due.
    exec(
        &db,
        "update pgq.queue set queue_switch_time = now() - interval '1 day'",
    )
    .await;
    let s = json(&db, &["status"]);
    let w = warnings(&s);
    assert!(
        w.contains(&(
            "rotation_held_back".into(),
            Some("q".into()),
            Some("slow".into())
        )),
        "{w:?}"
    );
    // pgq agrees: maintenance cannot rotate while the consumer sits on the old table.
    ok(&db, &["maint"]);
    let table: i32 = scalar(&db, "select queue_cur_table from pgq.queue").await;
    assert_eq!(table, 0, "rotation was held back");
    // Once it catches up, the warning goes and rotation happens.
    ok(&db, &["tick", "q"]);
    ok(&db, &["tail", "q", "slow"]);
    let s = json(&db, &["status"]);
    assert!(
        !warnings(&s).iter().any(|w| w.0 == "rotation_held_back"),
        "{s}"
    );
    ok(&db, &["maint"]);
    let table: i32 = scalar(&db, "select queue_cur_table from pgq.queue").await;
    assert_eq!(table, 1, "rotated");
}

#[tokio::test]
async fn watch_refreshes_until_interrupted() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args(["--db", &db.url(), "--json", "status", "--watch", "100ms"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when the test fails (a watch that stops printing must not outlive it).
    let mut child = KillOnDrop(child);
    // Lines arrive through a channel, so a watch that stops printing fails the test (after a
    // hang guard, not a timing assertion) instead of blocking it in read_line.
    let (tx, lines) = std::sync::mpsc::channel();
    let out = BufReader::new(child.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for _ in 0..2 {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a status line within 60 s")
            .unwrap();
        let s: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(s["queues"][0]["queue_name"], "q");
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C ends the watch cleanly: {status:?}"
    );
}

/// A child process SIGKILLed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // It may have exited already (then there is nothing to kill).
        if self.0.try_wait().is_ok_and(|s| s.is_none()) {
            self.0.kill().expect("kill the child process");
            self.0.wait().expect("reap the child process");
        }
    }
}
