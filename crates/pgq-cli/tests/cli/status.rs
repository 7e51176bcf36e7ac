//! `pgq status`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pgq_testkit::TestDb;
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
    assert_eq!(s["pgq_version"], "3.5");
    assert!(s["schema_version"].is_i64());
    assert_eq!(s["ticker_alive"], Value::Null);
    assert_eq!(s["queues"], serde_json::json!([]));
    assert!(warnings(&s).is_empty(), "{s}");
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    ok(&db, &["send", "q", "--type", "t", "--data", "d"]);
    let s = json(&db, &["status"]);
    assert_eq!(
        s["ticker_alive"], true,
        "the queue was just created, with a tick"
    );
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
    let db = TestDb::new().await;
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
    // Once it catches up, the warning goes and rotation happens. Other tests' open transactions
    // on the same cluster (txids are cluster-wide) can hold a new tick's snapshot back, which
    // rightly keeps rotation waiting; catch up again until the consumer is past the switch.
    let mut s = serde_json::Value::Null;
    let mut table = 0;
    for _ in 0..50 {
        ok(&db, &["tick", "q"]);
        ok(&db, &["tail", "q", "slow"]);
        s = json(&db, &["status"]);
        if !warnings(&s).iter().any(|w| w.0 == "rotation_held_back") {
            ok(&db, &["maint"]);
            table = scalar(&db, "select queue_cur_table from pgq.queue").await;
            if table == 1 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !warnings(&s).iter().any(|w| w.0 == "rotation_held_back"),
        "{s}"
    );
    assert_eq!(table, 1, "rotated");
}

#[tokio::test]
async fn watch_refreshes_until_interrupted() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args(["--db", &db.url(), "--json", "status", "--watch", "100ms"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0);
        let s: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(s["queues"][0]["queue_name"], "q");
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C ends the watch cleanly: {status:?}"
    );
}
