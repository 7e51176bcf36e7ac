//! `pgq dlq ...`: list, show, replay and purge dead letters; `pgq status` counts and warns.

use chrono::Utc;
use pgq_core::{ConsumerName, Event, NewDeadLetter, QueueName};
use pgq_testkit::TestDb;
use serde_json::Value;

use crate::util::{exec, fails, json, ok, scalar};

fn event(ev_id: i64, ty: Option<&str>, data: Option<&str>, extra: [Option<&str>; 4]) -> Event {
    let s = |v: Option<&str>| v.map(str::to_owned);
    Event {
        ev_id,
        ev_time: Utc::now(),
        ev_txid: 100 + ev_id,
        ev_retry: Some(3),
        ev_type: s(ty),
        ev_data: s(data),
        ev_extra1: s(extra[0]),
        ev_extra2: s(extra[1]),
        ev_extra3: s(extra[2]),
        ev_extra4: s(extra[3]),
    }
}

/// Three dead letters of queue `dq`: two of consumer `c` (one with NULL type and data), one of `d`.
async fn setup(db: &TestDb) -> Vec<i64> {
    ok(db, &["queue", "create", "dq"]);
    let q = QueueName::new("dq").unwrap();
    let full = event(
        1,
        Some("t1"),
        Some("d1"),
        [Some("a"), Some("b"), Some("c"), Some("d")],
    );
    let nulls = event(2, None, None, [None, None, Some("x3"), None]);
    let other = event(3, Some("t3"), Some("d3"), [None; 4]);
    let mut ids = pgq_core::insert_dead_letters(
        db.pool(),
        &q,
        &ConsumerName::new("c").unwrap(),
        &[
            NewDeadLetter {
                event: &full,
                reason: "boom 1",
            },
            NewDeadLetter {
                event: &nulls,
                reason: "boom 2",
            },
        ],
    )
    .await
    .unwrap();
    ids.extend(
        pgq_core::insert_dead_letters(
            db.pool(),
            &q,
            &ConsumerName::new("d").unwrap(),
            &[NewDeadLetter {
                event: &other,
                reason: "boom 3",
            }],
        )
        .await
        .unwrap(),
    );
    ids.into_iter().map(|i| i.get()).collect()
}

async fn dead_letters(db: &TestDb) -> i64 {
    scalar(db, "select count(*) from pgq_rs.dead_letter").await
}

/// Events stored in `queue`'s event tables.
async fn stored_in(db: &TestDb, queue: &str) -> i64 {
    let table: String = scalar(
        db,
        &format!("select queue_data_pfx from pgq.queue where queue_name = '{queue}'"),
    )
    .await;
    scalar(db, &format!("select count(*) from {table}")).await
}

#[tokio::test]
async fn list_and_show_every_field_newest_first() {
    let db = TestDb::new().await;
    let ids = setup(&db).await;
    let all = json(&db, &["dlq", "list"]);
    let all = all.as_array().unwrap();
    let listed: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, [ids[2], ids[1], ids[0]], "newest first");
    let first = &all[2];
    for (key, want) in [
        ("queue", "dq"),
        ("consumer", "c"),
        ("type", "t1"),
        ("data", "d1"),
        ("extra1", "a"),
        ("extra2", "b"),
        ("extra3", "c"),
        ("extra4", "d"),
        ("reason", "boom 1"),
    ] {
        assert_eq!(first[key], want, "{key} in {first}");
    }
    assert_eq!(first["ev_id"], 1);
    assert_eq!(first["retry"], 3);
    assert!(first["failed_at"].is_string());
    let nulls = &all[1];
    assert_eq!(nulls["type"], Value::Null, "NULL stays null");
    assert_eq!(nulls["data"], Value::Null);
    assert_eq!(nulls["extra3"], "x3");

    let only_c = json(
        &db,
        &["dlq", "list", "dq", "--consumer", "c", "--limit", "1"],
    );
    assert_eq!(only_c.as_array().unwrap().len(), 1);
    assert_eq!(only_c[0]["id"], ids[1]);
    assert_eq!(json(&db, &["dlq", "list", "other"]), Value::Array(vec![]));
    let text = ok(&db, &["dlq", "list"]);
    assert!(text.contains("boom 3") && text.contains("NULL"), "{text}");

    let shown = json(&db, &["dlq", "show", &ids[0].to_string()]);
    assert_eq!(&shown, first);
    let text = ok(&db, &["dlq", "show", &ids[1].to_string()]);
    assert!(text.contains("x3"), "{text}");
    let err = fails(&db, &["dlq", "show", "999999"], 1);
    assert!(err.contains("dead letter 999999 not found"), "{err}");
}

#[tokio::test]
async fn replay_moves_events_back_atomically_and_refuses_bad_input() {
    let db = TestDb::new().await;
    let ids = setup(&db).await;
    let before = stored_in(&db, "dq").await;

    // An unknown id among good ones: nothing is replayed.
    let err = fails(&db, &["dlq", "replay", &ids[0].to_string(), "999999"], 1);
    assert!(err.contains("999999"), "{err}");
    assert_eq!(dead_letters(&db).await, 3);
    assert_eq!(stored_in(&db, "dq").await, before);
    // A target queue that does not exist: nothing is replayed.
    let err = fails(&db, &["dlq", "replay", "--all", "--to", "nowhere"], 1);
    assert!(
        err.contains("not found") || err.contains("nowhere"),
        "{err}"
    );
    assert_eq!(dead_letters(&db).await, 3);
    // Neither ids nor --all: a usage error.
    fails(&db, &["dlq", "replay"], 2);

    let done = json(&db, &["dlq", "replay", &ids[0].to_string()]);
    assert_eq!(done["action"], "replay");
    assert_eq!(done["count"], 1);
    assert_eq!(done["items"][0]["queue"], "dq");
    let new_id = done["items"][0]["ev_id"].as_i64().unwrap();
    assert_eq!(dead_letters(&db).await, 2);
    let fields: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select ev_type, ev_data, ev_extra1, ev_extra4 from pgq.event_template \
             where ev_id = {new_id}"
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        fields,
        (
            Some("t1".into()),
            Some("d1".into()),
            Some("a".into()),
            Some("d".into())
        )
    );
    // Replaying it again: it is gone.
    fails(&db, &["dlq", "replay", &ids[0].to_string()], 1);

    // Only consumer d's, into another queue; NULLs stay NULL.
    ok(&db, &["queue", "create", "elsewhere"]);
    let done = json(
        &db,
        &[
            "dlq",
            "replay",
            "--all",
            "--consumer",
            "c",
            "--to",
            "elsewhere",
        ],
    );
    assert_eq!(done["count"], 1);
    assert_eq!(done["items"][0]["queue"], "elsewhere");
    let new_id = done["items"][0]["ev_id"].as_i64().unwrap();
    let nulls: bool = scalar(
        &db,
        &format!(
            "select ev_type is null and ev_data is null from pgq.event_template \
             where ev_id = {new_id} and ev_extra3 = 'x3'"
        ),
    )
    .await;
    assert!(nulls);
    assert_eq!(dead_letters(&db).await, 1);
    let left = json(&db, &["dlq", "list"]);
    assert_eq!(left[0]["consumer"], "d");
}

#[tokio::test]
async fn purge_by_id_age_and_all() {
    let db = TestDb::new().await;
    let ids = setup(&db).await;
    fails(&db, &["dlq", "purge"], 2);
    fails(&db, &["dlq", "purge", "--all", "--older-than", "1h"], 2);
    let err = fails(
        &db,
        &["dlq", "purge", &ids[0].to_string(), "999999", "--yes"],
        1,
    );
    assert!(err.contains("999999"), "{err}");
    assert_eq!(dead_letters(&db).await, 3);

    let done = json(&db, &["dlq", "purge", &ids[0].to_string(), "--yes"]);
    assert_eq!(done["count"], 1);
    assert_eq!(done["items"][0], ids[0]);
    assert_eq!(dead_letters(&db).await, 2);
    // None is older than an hour.
    let done = json(&db, &["dlq", "purge", "--older-than", "1h", "--yes"]);
    assert_eq!(done["count"], 0);
    exec(
        &db,
        &format!(
            "update pgq_rs.dead_letter set dl_failed_at = now() - interval '2 hours' \
             where dl_id = {}",
            ids[1]
        ),
    )
    .await;
    let done = json(&db, &["dlq", "purge", "--older-than", "1h", "--yes"]);
    assert_eq!(done["items"], serde_json::json!([ids[1]]));
    // --queue narrows --all.
    let done = json(&db, &["dlq", "purge", "--all", "--queue", "other", "--yes"]);
    assert_eq!(done["count"], 0);
    let out = ok(&db, &["dlq", "purge", "--all", "--yes"]);
    assert!(out.contains("1 dead letter(s) purged"), "{out}");
    assert_eq!(dead_letters(&db).await, 0);
}

#[tokio::test]
async fn status_counts_dead_letters_and_warns_about_new_ones() {
    let db = TestDb::new().await;
    setup(&db).await;
    let s = json(&db, &["status"]);
    let counts = s["dead_letters"].as_array().unwrap();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts[0]["consumer"], "c");
    assert_eq!(counts[0]["count"], 2);
    assert_eq!(counts[1]["count"], 1);
    let kinds: Vec<&Value> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] == "dead_letters")
        .collect();
    assert_eq!(kinds.len(), 2, "{s}");
    // Old dead letters are still counted, but no longer warned about.
    exec(
        &db,
        "update pgq_rs.dead_letter set dl_failed_at = now() - interval '2 days'",
    )
    .await;
    let s = json(&db, &["status"]);
    assert_eq!(s["dead_letters"].as_array().unwrap().len(), 2);
    assert!(
        !s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "dead_letters"),
        "{s}"
    );
}

/// A database whose schema predates dead letters still gets its status (and the
/// `schema_outdated` warning that says to install), not an error.
#[tokio::test]
async fn status_works_on_a_schema_from_before_dead_letters() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    exec(
        &db,
        "drop table pgq_rs.dead_letter cascade; \
         delete from pgq_rs._sqlx_migrations where version >= 20260101000007",
    )
    .await;
    let s = json(&db, &["status"]);
    assert_eq!(s["dead_letters"], serde_json::json!([]), "{s}");
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "schema_outdated"),
        "{s}"
    );
}
