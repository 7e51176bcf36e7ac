//! `pgq queue ...`.

use pgq_testkit::TestDb;
use serde_json::Value;

use crate::util::{exec, fails, json, ok, scalar};

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|v| v[key] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test]
async fn create_with_settings_list_info_config_pause_resume_drop() {
    let db = TestDb::new().await;
    let out = ok(
        &db,
        &[
            "queue",
            "create",
            "orders",
            "--ticker-max-count",
            "1000",
            "--ticker-max-lag",
            "500ms",
            "--ticker-idle-period",
            "30s",
            "--rotation-period",
            "1h",
        ],
    );
    assert!(out.contains("created queue \"orders\""), "{out}");

    let list = json(&db, &["queue", "list"]);
    let q = find(&list, "queue_name", "orders");
    assert_eq!(q["ticker_max_count"], 1000);
    assert_eq!(q["ticker_max_lag_secs"], 0.5);
    assert_eq!(q["ticker_idle_period_secs"], 30.0);
    assert_eq!(q["rotation_period_secs"], 3600.0);
    assert_eq!(q["ticker_paused"], false);
    assert_eq!(q["consumers"], 0);
    assert!(q["last_tick_id"].is_i64(), "{q}");
    let table = ok(&db, &["queue", "list"]);
    assert!(
        table.contains("orders") && table.contains("ticker lag"),
        "{table}"
    );

    let info = json(&db, &["queue", "info", "orders"]);
    assert_eq!(info["queue"]["queue_name"], "orders");
    assert_eq!(info["config"]["ticker_max_count"], 1000);
    assert_eq!(info["config"]["per_tx_limit"], Value::Null);
    assert_eq!(info["consumers"], serde_json::json!([]));
    let text = ok(&db, &["queue", "info", "orders"]);
    assert!(
        text.contains("ticker_max_lag") && text.contains("500ms"),
        "{text}"
    );

    let cfg = json(&db, &["queue", "config", "orders"]);
    assert_eq!(cfg["ticker_max_lag_secs"], 0.5);
    let cfg = json(
        &db,
        &[
            "queue",
            "config",
            "orders",
            "ticker_max_lag=2s",
            "per_tx_limit=5",
            "disable_insert=true",
        ],
    );
    assert_eq!(cfg["ticker_max_lag_secs"], 2.0);
    assert_eq!(cfg["per_tx_limit"], 5);
    assert_eq!(cfg["disable_insert"], true);
    let cfg = json(
        &db,
        &[
            "queue",
            "config",
            "orders",
            "per_tx_limit=none",
            "disable_insert=false",
        ],
    );
    assert_eq!(cfg["per_tx_limit"], Value::Null);
    assert_eq!(cfg["disable_insert"], false);

    let paused = json(&db, &["queue", "pause", "orders"]);
    assert_eq!(paused["action"], "pause");
    let info = json(&db, &["queue", "info", "orders"]);
    assert_eq!(info["queue"]["ticker_paused"], true);
    assert!(ok(&db, &["queue", "list"]).contains("paused"));
    ok(&db, &["queue", "resume", "orders"]);
    let info = json(&db, &["queue", "info", "orders"]);
    assert_eq!(info["queue"]["ticker_paused"], false);

    let dropped = json(&db, &["queue", "drop", "orders"]);
    assert_eq!(dropped["changed"], true);
    assert_eq!(json(&db, &["queue", "list"]), serde_json::json!([]));
    assert!(ok(&db, &["queue", "list"]).contains("no queues"));
}

#[tokio::test]
async fn creating_an_existing_queue_is_refused_unless_if_not_exists() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q", "--ticker-max-count", "7"]);
    let err = fails(&db, &["queue", "create", "q", "--ticker-max-count", "9"], 1);
    assert!(err.contains("exists already"), "{err}");
    let r = json(
        &db,
        &[
            "queue",
            "create",
            "q",
            "--if-not-exists",
            "--ticker-max-count",
            "9",
        ],
    );
    assert_eq!(r["changed"], false);
    let cfg = json(&db, &["queue", "config", "q"]);
    assert_eq!(cfg["ticker_max_count"], 7, "left unchanged");
}

#[tokio::test]
async fn quote_laden_and_unicode_names_work() {
    let db = TestDb::new().await;
    let q = r#"it's "quoted"; drop table x; --"#;
    let c = "o'neil \"ü\"";
    ok(&db, &["queue", "create", q]);
    ok(&db, &["consumer", "register", q, c]);
    let list = json(&db, &["queue", "list"]);
    assert_eq!(find(&list, "queue_name", q)["consumers"], 1);
    let consumers = json(&db, &["consumer", "list", q]);
    assert_eq!(consumers[0]["consumer_name"], c);
    let err = fails(&db, &["queue", "drop", q], 1);
    // The hint quotes the name for a shell.
    assert!(
        err.contains(r#"'it'\''s "quoted"; drop table x; --'"#),
        "{err}"
    );
    ok(&db, &["queue", "drop", q, "--force"]);
    let n: i64 = scalar(&db, "select count(*) from pgq.queue").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn bad_names_are_usage_errors() {
    let db = TestDb::new().await;
    let long_queue = "q".repeat(64);
    let long_consumer = "c".repeat(128);
    for args in [
        vec!["queue", "create", ""],
        vec!["queue", "create", long_queue.as_str()],
        vec!["queue", "create", "tab\there"],
        vec!["queue", "create", " leading"],
        vec!["queue", "info", ""],
        vec!["consumer", "register", "q", ""],
        vec!["consumer", "register", "q", long_consumer.as_str()],
        vec!["tail", "q", "nul\u{1}"],
    ] {
        let err = fails(&db, &args, 2);
        assert!(err.contains("invalid"), "{args:?}: {err}");
    }
    // Longest valid names are accepted.
    let q63 = "q".repeat(63);
    ok(&db, &["queue", "create", &q63]);
    ok(&db, &["consumer", "register", &q63, &"c".repeat(127)]);
    let n: i64 = scalar(&db, "select count(*) from pgq.queue").await;
    assert_eq!(n, 1, "only the valid queue was created");
}

#[tokio::test]
async fn invalid_durations_and_settings_are_usage_errors_and_change_nothing() {
    let db = TestDb::new().await;
    for args in [
        vec!["queue", "create", "q", "--ticker-max-lag", "soon"],
        vec![
            "queue",
            "create",
            "q",
            "--ticker-idle-period",
            "5 fortnights",
        ],
        vec!["queue", "create", "q", "--rotation-period", "0s"],
        vec!["queue", "create", "q", "--ticker-max-count", "0"],
        vec!["queue", "create", "q", "--ticker-max-count", "many"],
    ] {
        let err = fails(&db, &args, 2);
        assert!(err.contains("invalid"), "{args:?}: {err}");
    }
    let n: i64 = scalar(&db, "select count(*) from pgq.queue").await;
    assert_eq!(n, 0, "no queue was created");

    ok(&db, &["queue", "create", "q"]);
    for bad in [
        "ticker_max_lag=soon",
        "bogus=1",
        "no_equals_sign",
        "ticker_paused=maybe",
        "per_tx_limit=-1",
        "rotation_period=0s",
    ] {
        let err = fails(&db, &["queue", "config", "q", "ticker_max_count=5", bad], 2);
        assert!(err.contains(bad.split('=').next().unwrap()), "{bad}: {err}");
    }
    let cfg = json(&db, &["queue", "config", "q"]);
    assert_eq!(cfg["ticker_max_count"], 500, "nothing was changed");
}

#[tokio::test]
async fn dropping_a_queue_with_consumers_needs_force() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "a"]);
    ok(&db, &["consumer", "register", "q", "b"]);
    let err = fails(&db, &["queue", "drop", "q"], 1);
    assert!(err.contains("2 consumer(s)"), "{err}");
    assert!(err.contains("\"a\", \"b\""), "{err}");
    assert!(err.contains("--force"), "{err}");
    let n: i64 = scalar(&db, "select count(*) from pgq.subscription").await;
    assert_eq!(n, 2, "nothing changed");
    ok(&db, &["queue", "drop", "q", "--force"]);
    let n: i64 = scalar(&db, "select count(*) from pgq.queue").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn unknown_queue_is_reported_with_what_to_do() {
    let db = TestDb::new().await;
    for args in [
        vec!["queue", "info", "nope"],
        vec!["queue", "config", "nope"],
        vec!["queue", "config", "nope", "ticker_max_count=3"],
        vec!["queue", "pause", "nope"],
        vec!["queue", "resume", "nope"],
        vec!["queue", "drop", "nope"],
        vec!["consumer", "list", "nope"],
        vec!["consumer", "register", "nope", "c"],
        vec!["consumer", "unregister", "nope", "c"],
        vec!["send", "nope", "--type", "t", "--data", "d"],
        vec!["tail", "nope", "c"],
        vec!["tick", "nope"],
    ] {
        let err = fails(&db, &args, 1);
        assert!(
            err.contains("queue \"nope\" not found") && err.contains("pgq queue list"),
            "{args:?}: {err}"
        );
    }
    exec(&db, "select 1").await;
}

/// `queue create --consumer` registers consumers with the queue, so events produced before a
/// consumer first runs are delivered to it; the whole create is one transaction.
#[tokio::test]
async fn create_with_consumers_delivers_events_produced_before_they_run() {
    let db = TestDb::new().await;
    let out = ok(
        &db,
        &[
            "queue",
            "create",
            "outbox",
            "--consumer",
            "billing",
            "--consumer",
            "audit",
            "--ticker-max-lag",
            "0s",
        ],
    );
    assert!(out.contains("\"billing\", \"audit\""), "{out}");
    let list = json(&db, &["consumer", "list", "outbox"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    ok(&db, &["send", "outbox", "--type", "t", "--data", "early"]);
    ok(&db, &["tick", "outbox"]);
    let tailed = ok(&db, &["tail", "outbox", "billing"]);
    assert!(tailed.contains("early"), "{tailed}");

    // Existing queue: refused without --if-not-exists; with it, a new consumer is registered
    // and an existing one keeps its position.
    fails(&db, &["queue", "create", "outbox", "--consumer", "late"], 1);
    let before: i64 = scalar(
        &db,
        "select sub_last_tick from pgq.subscription s join pgq.consumer c \
         on c.co_id = s.sub_consumer where c.co_name = 'billing'",
    )
    .await;
    ok(&db, &["tick", "outbox"]);
    let again = json(
        &db,
        &[
            "queue",
            "create",
            "outbox",
            "--if-not-exists",
            "--consumer",
            "billing",
            "--consumer",
            "late",
        ],
    );
    assert_eq!(again["changed"], false);
    let after: i64 = scalar(
        &db,
        "select sub_last_tick from pgq.subscription s join pgq.consumer c \
         on c.co_id = s.sub_consumer where c.co_name = 'billing'",
    )
    .await;
    assert_eq!(before, after, "billing keeps its position");
    let n: i64 = scalar(
        &db,
        "select count(*) from pgq.consumer where co_name = 'late'",
    )
    .await;
    assert_eq!(n, 1);

    // A bad consumer name is a usage error and creates nothing.
    fails(&db, &["queue", "create", "other", "--consumer", " bad"], 2);
    let n: i64 = scalar(
        &db,
        "select count(*) from pgq.queue where queue_name = 'other'",
    )
    .await;
    assert_eq!(n, 0);
}
