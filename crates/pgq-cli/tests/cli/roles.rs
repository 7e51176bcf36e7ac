//! Least privilege at the command line: every read-only command works with the least role that
//! can see what it shows (README, "Roles"), and a permission error names the role that is
//! actually needed.

use pgq_core::{BatchId, ConsumerName, EventId, QueueName};
use pgq_testkit::TestDb;
use serde_json::Value;

use crate::util::{bare, exec, ok, run_fails, run_ok};

/// A login role unique to `db` with membership in `granted` (none when empty); its URL.
async fn role_url(db: &TestDb, suffix: &str, granted: &str) -> String {
    let role = format!("{}_{suffix}", db.name());
    let grant = if granted.is_empty() {
        String::new()
    } else {
        format!("; grant {granted} to {}", pgq_core::quote_ident(&role))
    };
    exec(
        db,
        &format!("create role {} login{grant}", pgq_core::quote_ident(&role)),
    )
    .await;
    db.url_as(&role, None)
}

fn as_role(url: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = bare();
    c.arg("--db").arg(url).args(args);
    c
}

fn json_as(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_ok(as_role(url, &all), &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pgq {all:?}: not JSON ({e}): {out}"))
}

/// A queue `q` with a consumer `c` that has one event waiting in its retry queue.
async fn queue_with_a_retry(db: &TestDb) {
    ok(db, &["queue", "create", "q"]);
    ok(db, &["consumer", "register", "q", "c"]);
    ok(db, &["send", "q", "--type", "t", "--data", "d"]);
    ok(db, &["tick", "q"]);
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
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    pgq_core::finish_batch(db.pool(), batch).await.unwrap();
}

#[tokio::test]
async fn read_only_commands_work_for_pgq_reader_and_pgq_admin() {
    let db = TestDb::new().await;
    queue_with_a_retry(&db).await;
    let reader = role_url(&db, "reader", "pgq_reader").await;
    let admin = role_url(&db, "admin", "pgq_admin").await;
    for url in [&reader, &admin] {
        let status = json_as(url, &["status"]);
        assert!(status["schema_version"].is_i64(), "{status}");
        let c = &status["consumers"][0];
        assert_eq!(c["retry_events"], 1, "retry counts are visible: {status}");
        let check = json_as(url, &["install", "--check"]);
        assert_eq!(check["schema_up_to_date"], true, "{check}");
        // status --check runs the same reads (it exits 3 only for warnings: the ticker here is
        // `pgq tick`, so "no ticker" may be one).
        let o = as_role(url, &["status", "--check"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(0 | 3)),
            "status --check: {:?}\n{err}",
            o.status.code()
        );
        assert!(!err.contains("permission denied"), "{err}");
        let list = json_as(url, &["consumer", "list"]);
        assert_eq!(list[0]["retry_events"], 1, "{list}");
        let info = json_as(url, &["queue", "info", "q"]);
        assert_eq!(info["consumers"][0]["retry_events"], 1, "{info}");
        let queues = json_as(url, &["queue", "list"]);
        assert_eq!(queues[0]["queue_name"], "q");
        let config = json_as(url, &["queue", "config", "q"]);
        assert_eq!(config["queue_name"], "q");
    }
}

#[tokio::test]
async fn without_a_pgq_role_reads_name_pgq_reader() {
    let db = TestDb::new().await;
    queue_with_a_retry(&db).await;
    let nobody = role_url(&db, "nobody", "").await;
    // What pgq shows everyone needs no role.
    let queues = json_as(&nobody, &["queue", "list"]);
    assert_eq!(queues[0]["queue_name"], "q");
    for args in [
        &["status"][..],
        &["install", "--check"],
        &["consumer", "list"],
        &["queue", "info", "q"],
    ] {
        let err = run_fails(as_role(&nobody, args), args, 1);
        assert!(
            err.contains("grant the role pgq_reader"),
            "pgq {args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn tick_names_pgq_admin_the_first_time() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let before = json_as(&db.url(), &["queue", "info", "q"])["queue"]["last_tick_id"].clone();
    for (suffix, granted) in [
        ("none", ""),
        ("reader", "pgq_reader"),
        ("writer", "pgq_writer"),
    ] {
        let url = role_url(&db, suffix, granted).await;
        let err = run_fails(as_role(&url, &["tick", "q"]), &["tick", "q"], 1);
        assert!(
            err.contains("grant the role pgq_admin") && !err.contains("pgq_reader"),
            "as a role with {granted:?}: {err}"
        );
    }
    let after = json_as(&db.url(), &["queue", "info", "q"])["queue"]["last_tick_id"].clone();
    assert_eq!(before, after, "no tick was made");
    let admin = role_url(&db, "admin", "pgq_admin").await;
    let r = json_as(&admin, &["tick", "q"]);
    assert!(r["tick_id"].is_i64(), "{r}");
}

/// Dead letters with the least roles (README, `pgq dlq`): pgq_reader lists and shows, pgq_writer
/// replays, pgq_admin purges; a role without the privilege is told which role to grant and
/// nothing changes.
#[tokio::test]
async fn dead_letter_commands_need_the_roles_the_readme_names() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    exec(
        &db,
        "insert into pgq_rs.dead_letter (dl_queue, dl_consumer, ev_id, ev_time, ev_type, ev_data, dl_reason) \
         values ('q', 'c', 1, now(), 't', 'a', 'boom'), ('q', 'c', 2, now(), 't', 'b', 'boom')",
    )
    .await;
    let reader = role_url(&db, "dl_reader", "pgq_reader").await;
    let writer = role_url(&db, "dl_writer", "pgq_writer").await;
    let admin = role_url(&db, "dl_admin", "pgq_admin").await;
    let listed = json_as(&reader, &["dlq", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let id = listed[0]["id"].as_i64().unwrap().to_string();
    let shown = json_as(&reader, &["dlq", "show", &id]);
    assert_eq!(shown["data"], "b");

    let err = run_fails(as_role(&reader, &["dlq", "replay", &id]), &["replay"], 1);
    assert!(err.contains("pgq_writer"), "{err}");
    let err = run_fails(
        as_role(&writer, &["dlq", "purge", &id, "--yes"]),
        &["purge"],
        1,
    );
    assert!(err.contains("pgq_admin"), "{err}");
    assert_eq!(
        json_as(&admin, &["dlq", "list"]).as_array().unwrap().len(),
        2
    );

    let replayed = json_as(&writer, &["dlq", "replay", &id]);
    assert_eq!(replayed["count"], 1);
    let purged = json_as(&admin, &["dlq", "purge", "--all", "--yes"]);
    assert_eq!(purged["count"], 1);
}
