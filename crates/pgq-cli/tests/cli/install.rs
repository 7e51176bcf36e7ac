//! `pgq install [--check]`.

use pgq_testkit::TestDb;

use crate::util::{fails, json, ok};

#[tokio::test]
async fn install_is_idempotent_and_check_reports() {
    let db = TestDb::new().await;
    let r = json(&db, &["install"]);
    assert!(r["pgq_version"].as_str().unwrap().starts_with("3.5"), "{r}");
    assert_eq!(r["applied"], serde_json::json!([]));
    assert!(ok(&db, &["install"]).contains("already installed"));
    let c = json(&db, &["install", "--check"]);
    assert!(c["pgq_version"].as_str().unwrap().starts_with("3.5"), "{c}");
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

/// `install --check` and `status` say which pgq_coop is installed: ours, none, or another one
/// (simulated: our schema replaced by one with the same function names).
#[tokio::test]
async fn check_and_status_say_which_pgq_coop_is_installed() {
    let db = TestDb::new().await;
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["coop"]["kind"], "pgq_rs", "{c}");
    let text = ok(&db, &["install", "--check"]);
    assert!(
        text.contains("pgq_coop:       pgq_rs's own schema"),
        "{text}"
    );
    let s = json(&db, &["status"]);
    assert_eq!(s["coop"]["kind"], "pgq_rs", "{s}");

    crate::util::exec(
        &db,
        "drop schema pgq_coop cascade;
         create schema pgq_coop;
         create function pgq_coop.version() returns text language sql as $$ select '3.1.1' $$;
         create function pgq_coop.next_batch(text, text, text) returns int8
             language sql as $$ select null::int8 $$;",
    )
    .await;
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["coop"]["kind"], "other", "{c}");
    assert_eq!(c["coop"]["version"], "3.1.1", "{c}");
    let text = ok(&db, &["status"]);
    assert!(
        text.contains("pgq_coop: a pgq_coop schema not installed by pgq_rs (3.1.1)"),
        "{text}"
    );
    ok(&db, &["queue", "create", "q"]);
    let err = fails(&db, &["tail", "q", "g", "--subconsumer", "m"], 1);
    assert!(err.contains("not installed by pgq_rs"), "{err}");

    crate::util::exec(&db, "drop schema pgq_coop cascade").await;
    let c = json(&db, &["install", "--check"]);
    assert_eq!(c["coop"], serde_json::Value::Null, "{c}");
}
