//! `pgq consumer ...`.

use pgq_core::{ConsumerName, QueueName};
use pgq_testkit::TestDb;

use crate::util::{fails, json, ok, scalar};

#[tokio::test]
async fn register_list_move_copy_unregister() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let r = json(&db, &["consumer", "register", "q", "billing"]);
    assert_eq!(r["action"], "register");
    assert_eq!(r["changed"], true);
    let first_tick = r["last_tick_id"].as_i64().expect("a tick id");
    let again = ok(&db, &["consumer", "register", "q", "billing"]);
    assert!(again.contains("already registered"), "{again}");

    ok(&db, &["tick", "q"]);
    ok(&db, &["tick", "q"]);
    let audit = json(&db, &["consumer", "register", "q", "audit"]);
    assert!(audit["last_tick_id"].as_i64().unwrap() > first_tick);
    // Copy billing's (older) position.
    let copy = json(
        &db,
        &[
            "consumer",
            "register",
            "q",
            "copy",
            "--copy-from",
            "billing",
        ],
    );
    assert_eq!(copy["last_tick_id"], first_tick);
    // Move audit back to the first tick.
    let moved = ok(
        &db,
        &[
            "consumer",
            "register",
            "q",
            "audit",
            "--at-tick",
            &first_tick.to_string(),
        ],
    );
    assert!(moved.contains("moved"), "{moved}");

    let list = json(&db, &["consumer", "list", "q"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing", "copy"]);
    for c in list.as_array().unwrap() {
        assert_eq!(c["queue_name"], "q");
        assert_eq!(c["last_tick_id"], first_tick);
        assert!(
            c["lag_secs"].is_f64() && c["last_seen_secs"].is_f64(),
            "{c}"
        );
        assert!(
            c["pending_events"].is_i64() && c["retry_events"] == 0,
            "{c}"
        );
        assert!(c["current_batch"].is_null(), "{c}");
    }
    let all = json(&db, &["consumer", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let table = ok(&db, &["consumer", "list"]);
    assert!(
        table.contains("billing") && table.contains("pending"),
        "{table}"
    );

    let r = json(&db, &["consumer", "unregister", "q", "copy"]);
    assert_eq!(r["action"], "unregister");
    assert_eq!(
        json(&db, &["consumer", "list", "q"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn unknown_consumer_and_bad_positions_fail_without_changes() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let err = fails(&db, &["consumer", "unregister", "q", "ghost"], 1);
    assert!(
        err.contains("consumer \"ghost\" is not registered on queue \"q\"")
            && err.contains("pgq consumer register q ghost"),
        "{err}"
    );
    let err = fails(
        &db,
        &["consumer", "register", "q", "c", "--copy-from", "ghost"],
        1,
    );
    assert!(err.contains("\"ghost\" is not registered"), "{err}");
    let err = fails(
        &db,
        &["consumer", "register", "q", "c", "--at-tick", "999999"],
        1,
    );
    assert!(err.contains("tick"), "{err}");
    let n: i64 = scalar(&db, "select count(*) from pgq.subscription").await;
    assert_eq!(n, 0, "nothing was registered");
    fails(
        &db,
        &[
            "consumer",
            "register",
            "q",
            "c",
            "--at-tick",
            "1",
            "--copy-from",
            "x",
        ],
        2,
    );
    fails(
        &db,
        &["consumer", "register", "q", "c", "--at-tick", "0"],
        2,
    );
    let empty = ok(&db, &["consumer", "list", "q"]);
    assert!(empty.contains("no consumers on queue \"q\""), "{empty}");
}

#[tokio::test]
async fn cooperative_members_are_listed_under_their_group() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let q = QueueName::new("q").unwrap();
    let group = ConsumerName::new("workers").unwrap();
    for m in ["w1", "w2"] {
        pgq_core::coop_register_member(db.pool(), &q, &group, &ConsumerName::new(m).unwrap())
            .await
            .unwrap();
    }
    ok(&db, &["consumer", "register", "q", "solo"]);
    let list = json(&db, &["consumer", "list", "q"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let workers = list
        .iter()
        .find(|c| c["consumer_name"] == "workers")
        .unwrap();
    let members: Vec<&str> = workers["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["consumer_name"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["workers.w1", "workers.w2"]);
    let solo = list.iter().find(|c| c["consumer_name"] == "solo").unwrap();
    assert_eq!(solo["members"], serde_json::json!([]));
    let table = ok(&db, &["consumer", "list", "q"]);
    assert!(table.contains("└ w1") && table.contains("└ w2"), "{table}");
}

/// `pgq consumer unregister Q group.member` on a member holding a batch: the batch's events go
/// back to the group (they were lost: pgq.unregister_consumer deletes only the member's row).
#[tokio::test]
async fn unregistering_a_member_holding_a_batch_returns_its_events_to_the_group() {
    let db = TestDb::new().await;
    let pool = db.pool();
    ok(&db, &["queue", "create", "q"]);
    let q = QueueName::new("q").unwrap();
    let group = ConsumerName::new("workers").unwrap();
    let (w1, w2) = (
        ConsumerName::new("w1").unwrap(),
        ConsumerName::new("w2").unwrap(),
    );
    for m in [&w1, &w2] {
        pgq_core::coop_register_member(pool, &q, &group, m)
            .await
            .unwrap();
    }
    for i in 0..5 {
        ok(&db, &["send", "q", "--type", "t", "--data", &i.to_string()]);
    }
    ok(&db, &["tick", "q"]);
    let next = |m: ConsumerName| {
        let (q, group) = (q.clone(), group.clone());
        async move { pgq_core::coop_next_batch(pool, &q, &group, &m, Default::default(), None).await }
    };
    assert!(
        next(w1.clone()).await.unwrap().is_some(),
        "w1 holds the batch"
    );

    let out = ok(&db, &["consumer", "unregister", "q", "workers.w1"]);
    assert!(out.contains("unregistered"), "{out}");

    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    ok(&db, &["tick", "q"]);
    let mut got = Vec::new();
    while let Some(b) = next(w2.clone()).await.unwrap() {
        for ev in pgq_core::get_batch_events(pool, b).await.unwrap() {
            got.push(ev.ev_data.unwrap());
        }
        pgq_core::coop_finish_batch(pool, b).await.unwrap();
    }
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4"], "nothing lost");
}
