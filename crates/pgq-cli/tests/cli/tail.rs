//! `pgq tail`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgq_testkit::TestDb;
use serde_json::Value;

use crate::util::{exec, fails, json, ok, pgq, run_ok, scalar};

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn queue_with_events(db: &TestDb, n: usize) {
    ok(db, &["queue", "create", "q"]);
    ok(db, &["consumer", "register", "q", "c"]);
    let body: String = (0..n)
        .map(|i| format!("{{\"type\":\"t{i}\",\"data\":\"line {i}\\nsecond\"}}\n"))
        .collect();
    let mut c = pgq(db, &["send", "q", "--file", "-"]);
    c.write_stdin(body);
    run_ok(c, &["send"]);
    ok(db, &["tick", "q"]);
}

#[tokio::test]
async fn prints_events_and_finishes_the_batch() {
    let db = TestDb::new().await;
    queue_with_events(&db, 3).await;
    let out = ok(&db, &["tail", "q", "c"]);
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 3, "{out}");
    assert!(
        printed[0].contains("t0 line 0\\nsecond"),
        "one line per event: {out}"
    );
    // The batch was finished: nothing more to print.
    assert_eq!(ok(&db, &["tail", "q", "c"]), "");
    let c = json(&db, &["consumer", "list", "q"]);
    assert!(c[0]["current_batch"].is_null());
}

#[tokio::test]
async fn json_lines_can_be_sent_again() {
    let db = TestDb::new().await;
    queue_with_events(&db, 2).await;
    let out = ok(&db, &["--json", "tail", "q", "c"]);
    let evs = lines(&out);
    assert_eq!(evs.len(), 2);
    for key in [
        "batch_id", "ev_id", "time", "txid", "retry", "type", "data", "extra1", "extra4",
    ] {
        assert!(evs[0].get(key).is_some(), "{key} missing: {}", evs[0]);
    }
    let mut types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["t0", "t1"]);

    // Replay into another queue.
    ok(&db, &["queue", "create", "copy"]);
    ok(&db, &["consumer", "register", "copy", "c"]);
    let mut c = pgq(&db, &["send", "copy", "--file", "-"]);
    c.write_stdin(out.clone());
    run_ok(c, &["send replay"]);
    ok(&db, &["tick", "copy"]);
    let again = lines(&ok(&db, &["--json", "tail", "copy", "c"]));
    let mut data: Vec<&str> = again.iter().map(|e| e["data"].as_str().unwrap()).collect();
    data.sort();
    assert_eq!(data, ["line 0\nsecond", "line 1\nsecond"]);
}

#[tokio::test]
async fn max_events_mid_batch_loses_nothing() {
    let db = TestDb::new().await;
    queue_with_events(&db, 5).await;
    let o = pgq(&db, &["--json", "tail", "q", "c", "--max-events", "2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let first = lines(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(first.len(), 2);
    let batch = first[0]["batch_id"].as_i64().unwrap();
    // Stderr says where it stopped, how much is left and how to move on.
    let err = String::from_utf8_lossy(&o.stderr);
    for part in [
        format!("inside batch {batch}"),
        "printed 2 of its 5 events, 3 not printed".to_owned(),
        "--finish-batch".to_owned(),
        "--max-events 5 or more".to_owned(),
    ] {
        assert!(err.contains(&part), "{part:?} missing: {err}");
    }
    // The batch is still open and all five events come again.
    let all = lines(&ok(&db, &["--json", "tail", "q", "c"]));
    assert_eq!(all.len(), 5);
    // Exactly at the end of a batch: it is finished.
    ok(&db, &["send", "q", "--type", "x", "--data", "y"]);
    ok(&db, &["tick", "q"]);
    let one = ok(&db, &["tail", "q", "c", "--max-events", "1"]);
    assert_eq!(one.lines().count(), 1);
    assert_eq!(ok(&db, &["tail", "q", "c"]), "");
    fails(&db, &["tail", "q", "c", "--max-events", "0"], 2);
}

#[tokio::test]
async fn finish_batch_moves_past_a_batch_larger_than_max_events() {
    let db = TestDb::new().await;
    queue_with_events(&db, 5).await;
    // Two runs without --finish-batch print the same two events: the batch stays open.
    let a = lines(&ok(&db, &["--json", "tail", "q", "c", "--max-events", "2"]));
    let b = lines(&ok(&db, &["--json", "tail", "q", "c", "--max-events", "2"]));
    assert_eq!(a, b);
    // --finish-batch prints to the end of the batch (every event, none skipped) and finishes it.
    let args = ["--max-events", "2", "--finish-batch"];
    let o = pgq(&db, &[&["--json", "tail", "q", "c"][..], &args].concat())
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty(), "{err}");
    let all = lines(&String::from_utf8_lossy(&o.stdout));
    let mut types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(ok(&db, &["tail", "q", "c"]), "", "the batch was finished");
    let c = json(&db, &["consumer", "list", "q"]);
    assert!(c[0]["current_batch"].is_null());
    // It stops after that batch: the next one stays for the next run.
    ok(&db, &["send", "q", "--type", "next", "--data", "d"]);
    ok(&db, &["tick", "q"]);
    let next = lines(&ok(&db, &["--json", "tail", "q", "c"]));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["type"], "next");
    // --finish-batch means nothing without --max-events.
    fails(&db, &["tail", "q", "c", "--finish-batch"], 2);
}

#[tokio::test]
async fn follow_wakes_on_ticks() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    // A poll interval of an hour: only the tick notification can wake it in time.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args(["--db", &db.url(), "--json", "tail", "q", "c", "--follow"])
        .args(["--max-events", "2", "--poll-interval", "1h"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Should the wakeup not work, end the child rather than hang the test run.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    // Wait until it listens.
    let started = Instant::now();
    loop {
        let n: i64 = scalar(
            &db,
            "select count(*) from pg_stat_activity
              where datname = current_database() and query ilike 'listen%'",
        )
        .await;
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tail never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(&db, &["send", "q", "--type", "a", "--data", "1"]);
    ok(&db, &["send", "q", "--type", "b", "--data", "2"]);
    ok(&db, &["tick", "q"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    let waited = Instant::now();
    while got.len() < 2 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        got.push(line);
        assert!(waited.elapsed() < Duration::from_secs(60));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[tokio::test]
async fn subconsumer_joins_a_cooperative_group() {
    let db = TestDb::new().await;
    queue_with_events(&db, 0).await;
    // The member registers (joining the group `workers`) on its first call; the group's
    // position is the newest tick, so tick again after it joined.
    assert_eq!(
        ok(&db, &["tail", "q", "workers", "--subconsumer", "w1"]),
        ""
    );
    ok(
        &db,
        &["send", "q", "--type", "t", "--data", "for the group"],
    );
    ok(&db, &["tick", "q"]);
    let out = ok(
        &db,
        &["--json", "tail", "q", "workers", "--subconsumer", "w1"],
    );
    let evs = lines(&out);
    assert_eq!(evs.len(), 1, "{out}");
    assert_eq!(evs[0]["data"], "for the group");
    let list = json(&db, &["consumer", "list", "q"]);
    let workers = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer_name"] == "workers")
        .unwrap();
    assert_eq!(workers["members"][0]["consumer_name"], "workers.w1");
    let err = fails(&db, &["tail", "q", "workers", "--subconsumer", "a.b"], 1);
    assert!(err.contains("must not contain '.'"), "{err}");
}

#[tokio::test]
async fn subconsumer_without_coop_schema_says_to_install() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    exec(&db, "drop schema pgq_coop cascade").await;
    let err = fails(&db, &["tail", "q", "workers", "--subconsumer", "w1"], 1);
    assert!(
        err.contains("cooperative consumers need the pgq_coop schema: run `pgq install`"),
        "{err}"
    );
}

#[tokio::test]
async fn unregistered_consumer_is_refused() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let err = fails(&db, &["tail", "q", "ghost"], 1);
    assert!(err.contains("pgq consumer register q ghost"), "{err}");
}
