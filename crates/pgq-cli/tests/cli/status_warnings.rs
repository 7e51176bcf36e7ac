//! `pgq status` warnings with no other test: `no_ticks` (a queue that was never ticked) and
//! `schema_outdated` (the database's schema is older than this build's); both make `--check`
//! exit 3 and go away once fixed.

use pgq_testkit::TestDb;
use serde_json::Value;

use crate::util::{exec, fails, json, ok};

/// (kind, queue) of each warning.
fn warnings(s: &Value) -> Vec<(String, Option<String>)> {
    s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap().to_owned(),
                w["queue_name"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_queue_without_ticks_is_a_no_ticks_warning() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "ticked"]);
    ok(&db, &["queue", "create", "never"]);
    // A queue whose ticks are gone (as if created by hand without one, or its ticks deleted).
    exec(
        &db,
        "delete from pgq.tick where tick_queue = \
         (select queue_id from pgq.queue where queue_name = 'never')",
    )
    .await;
    let s = json(&db, &["status"]);
    let w = warnings(&s);
    assert!(
        w.contains(&("no_ticks".into(), Some("never".into()))),
        "{w:?}"
    );
    assert!(
        !w.iter()
            .any(|(k, q)| k == "no_ticks" && q.as_deref() == Some("ticked")),
        "{w:?}"
    );
    fails(&db, &["status", "--check"], 3);
    let out =
        String::from_utf8(crate::util::pgq(&db, &["status"]).output().unwrap().stdout).unwrap();
    assert!(out.contains("pgq tick never"), "the fix is named: {out}");
    // The named fix works on a queue without ticks (pgq.force_tick answers NULL for it, as for
    // a missing queue).
    ok(&db, &["tick", "never"]);
    let w = warnings(&json(&db, &["status"]));
    assert!(!w.iter().any(|(k, _)| k == "no_ticks"), "{w:?}");
}

#[tokio::test]
async fn an_older_schema_is_a_schema_outdated_warning_until_install() {
    let db = TestDb::new().await;
    let s = json(&db, &["status"]);
    assert!(
        !warnings(&s).iter().any(|(k, _)| k == "schema_outdated"),
        "{s}"
    );
    let latest = s["schema_version"].as_i64().unwrap();
    // The database as an older build left it: the newest migration not applied.
    exec(
        &db,
        "delete from pgq_rs._sqlx_migrations \
         where version = (select max(version) from pgq_rs._sqlx_migrations)",
    )
    .await;
    let s = json(&db, &["status"]);
    assert!(s["schema_version"].as_i64().unwrap() < latest, "{s}");
    assert!(
        warnings(&s).contains(&("schema_outdated".into(), None)),
        "{s}"
    );
    fails(&db, &["status", "--check"], 3);
    ok(&db, &["install"]);
    let s = json(&db, &["status"]);
    assert_eq!(s["schema_version"].as_i64(), Some(latest));
    assert!(
        !warnings(&s).iter().any(|(k, _)| k == "schema_outdated"),
        "{s}"
    );
}

/// The messages of the `xmin_horizon_held` warnings.
fn horizon_messages(s: &Value) -> Vec<String> {
    s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] == "xmin_horizon_held")
        .map(|w| w["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_session_holding_the_xmin_horizon_is_named_until_it_ends() {
    use pgq_core::sqlx::{Connection as _, PgConnection};
    let db = TestDb::new().await;
    let mut holder = PgConnection::connect(&db.url()).await.unwrap();
    for sql in [
        "set application_name = 'nightly report'",
        "begin isolation level repeatable read",
        "select count(*) from pg_class",
    ] {
        pgq_core::sqlx::query(sql)
            .execute(&mut holder)
            .await
            .unwrap();
    }
    let pid: i32 = pgq_core::sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // The oldest holder is named; other tests' sessions may be older for a moment.
    let args = ["status", "--horizon-after", "1s"];
    let mut named = None;
    for _ in 0..50 {
        named = horizon_messages(&json(&db, &args))
            .into_iter()
            .find(|m| m.contains(&format!("session {pid} ")));
        if named.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let m = named.expect("the session holding the horizon is named");
    assert!(
        m.contains("nightly report") && m.contains("idle in transaction"),
        "{m}"
    );
    assert!(m.contains(&format!("pg_terminate_backend({pid})")), "{m}");
    fails(&db, &["status", "--check", "--horizon-after", "1s"], 3);
    // Under the default threshold (60 s) it is not yet worth a warning.
    assert!(
        !horizon_messages(&json(&db, &["status"]))
            .iter()
            .any(|m| m.contains(&format!("session {pid} "))),
    );
    pgq_core::sqlx::query("commit")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    assert!(
        !horizon_messages(&json(&db, &args))
            .iter()
            .any(|m| m.contains(&format!("session {pid} "))),
        "gone once the transaction ends"
    );
}
