//! `pgq install [--check]`.

use pgq_testkit::TestDb;

use crate::util::{fails, json, ok};

#[tokio::test]
async fn install_is_idempotent_and_check_reports() {
    let db = TestDb::new().await;
    let r = json(&db, &["install"]);
    assert_eq!(r["pgq_version"], "3.5");
    assert_eq!(r["applied"], serde_json::json!([]));
    assert!(ok(&db, &["install"]).contains("already installed"));
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["pgq_version"], "3.5");
    assert_eq!(c["schema_up_to_date"], true);
    assert_eq!(c["schema_version"], c["latest_schema_version"]);
    assert_eq!(c["ticker_alive"], serde_json::Value::Null);
    ok(&db, &["queue", "create", "q"]);
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["queues"][0]["queue_name"], "q");
    assert_eq!(c["queues"][0]["ticked_here"], true);
    assert_eq!(
        c["ticker_alive"], false,
        "create_queue's tick is not a ticker"
    );
    // A session holding pgq-ticker's lock is a running ticker.
    let mut ticker = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&db.url()).await.unwrap()
    };
    assert!(
        pgq_core::try_ticker_lock(&mut ticker, pgq_core::TICKER_LOCK_KEY)
            .await
            .unwrap()
    );
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["ticker_alive"], true);
    assert!(c["ticker"]["pid"].is_i64(), "{c}");
    let text = ok(&db, &["install", "--check"]);
    assert!(text.contains("ticker:         alive (pid"), "{text}");
}

#[tokio::test]
async fn install_into_an_empty_database() {
    let db = TestDb::new_without_schema().await;
    let err = fails(&db, &["install", "--check"], 1);
    assert!(err.contains("run `pgq install`"), "{err}");
    let err = fails(&db, &["queue", "list"], 1);
    assert!(err.contains("pgq install"), "{err}");
    let r = json(&db, &["install"]);
    assert!(!r["applied"].as_array().unwrap().is_empty(), "{r}");
    ok(&db, &["install", "--check"]);
    ok(&db, &["queue", "create", "q"]);
}
