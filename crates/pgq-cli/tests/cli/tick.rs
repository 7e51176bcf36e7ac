//! `pgq tick` and `pgq maint`.

use pgq_core::{BatchId, ConsumerName, EventId, QueueName};
use pgq_testkit::TestDb;

use crate::util::{fails, json, ok};

#[tokio::test]
async fn tick_all_and_one_queue() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let before = json(&db, &["queue", "info", "q"])["queue"]["last_tick_id"]
        .as_i64()
        .unwrap();
    let r = json(&db, &["tick", "q"]);
    assert_eq!(r["queue_name"], "q");
    assert_eq!(r["tick_id"], before + 1);
    let text = ok(&db, &["tick", "q"]);
    assert!(text.contains(&format!("tick {}", before + 2)), "{text}");
    let round = json(&db, &["tick"]);
    assert!(round["queues_processed"].is_i64(), "{round}");
    assert!(ok(&db, &["tick"]).contains("ticker round done"));

    ok(&db, &["queue", "pause", "q"]);
    let err = fails(&db, &["tick", "q"], 1);
    assert!(err.contains("pgq queue resume q"), "{err}");
}

#[tokio::test]
async fn maint_runs_operations_and_moves_retry_events() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    ok(&db, &["send", "q", "--type", "t", "--data", "d"]);
    ok(&db, &["tick", "q"]);
    // Put the event into the retry queue, due now.
    let q = QueueName::new("q").unwrap();
    let c = ConsumerName::new("c").unwrap();
    let batch: BatchId = pgq_core::next_batch(db.pool(), &q, &c)
        .await
        .unwrap()
        .unwrap();
    let evs = pgq_core::get_batch_events(db.pool(), batch).await.unwrap();
    pgq_core::event_retry(
        db.pool(),
        batch,
        EventId(evs[0].ev_id),
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    pgq_core::finish_batch(db.pool(), batch).await.unwrap();
    let list = json(&db, &["consumer", "list", "q"]);
    assert_eq!(list[0]["retry_events"], 1);

    let r = json(&db, &["maint"]);
    assert_eq!(r["retry_events_moved"], 1);
    let ops = r["operations"].as_array().unwrap();
    assert!(ops.iter().all(|o| o["calls"].as_u64().unwrap() >= 1), "{r}");
    let text = ok(&db, &["maint"]);
    assert!(
        text.contains("retry events moved back into their queues: 0"),
        "{text}"
    );
    let list = json(&db, &["consumer", "list", "q"]);
    assert_eq!(list[0]["retry_events"], 0);
}
