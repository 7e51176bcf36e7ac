//! Hot standby, server restarts and unreachable databases.

use std::time::Instant;

use pgq_testkit::{Cluster, TestDb};

use crate::util::{TickerProc, busy_queue, eventually, tick_count, ticks_beyond};

#[tokio::test]
async fn two_tickers_one_ticks_the_other_takes_over_after_sigkill() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "ha").await;
    let args = ["--db", &db.url(), "--ticker-period", "100ms"];
    let a = TickerProc::spawn_http(&args, true);
    let b = TickerProc::spawn_http(&args, true);
    let name = db.name().to_owned();
    // Exactly one is active, the other stands by.
    let a_active = eventually("one active and one standby ticker", || async {
        match (a.db_state(&name)?.as_str(), b.db_state(&name)?.as_str()) {
            ("active", "standby") => Some(true),
            ("standby", "active") => Some(false),
            _ => None,
        }
    })
    .await;
    let (active, standby) = if a_active { (a, b) } else { (b, a) };
    // Sessions that hold the ticker lock: exactly one.
    let holders: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted \
           and database = (select oid from pg_database where datname = current_database()) \
           and classid::int8 = ($1::int8 >> 32) & 4294967295 and objid::int8 = $1::int8 & 4294967295",
    )
    .bind(pgq_core::TICKER_LOCK_KEY)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(holders, 1);
    assert_eq!(standby.db_state(&name).as_deref(), Some("standby"));

    let mut active = active;
    active.child.kill().unwrap();
    active.child.wait().unwrap();
    let killed_at = tick_count(db.pool(), "ha").await;
    eventually("the standby to take over", || async {
        (standby.db_state(&name)?.as_str() == "active").then_some(())
    })
    .await;
    ticks_beyond(db.pool(), "ha", killed_at + 2).await;
}

#[tokio::test]
async fn ticking_resumes_after_postgres_restart() {
    let cluster = Cluster::start_private().expect("private cluster");
    let db = TestDb::new_on(&cluster).await;
    busy_queue(db.pool(), "r").await;
    let t = TickerProc::spawn(&["--db", &db.url(), "--ticker-period", "100ms"]);
    let n = ticks_beyond(db.pool(), "r", 1).await;
    db.pool().close().await;
    cluster.stop_immediate().expect("stop");
    std::thread::sleep(std::time::Duration::from_secs(2));
    cluster.start().expect("start");
    let back = Instant::now();
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    ticks_beyond(&pool, "r", n + 1).await;
    eprintln!(
        "ticking resumed {:.1}s after the server was back",
        back.elapsed().as_secs_f64()
    );
    assert!(t.logs().contains("reconnecting") || t.logs().contains("retrying"));
}

#[tokio::test]
async fn an_unreachable_database_does_not_stop_the_others() {
    let good = TestDb::new().await;
    busy_queue(good.pool(), "g").await;
    // A server that is not there: a closed port.
    let port = pgq_testkit::free_port();
    let bad = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let t = TickerProc::spawn_http(
        &[
            "--db",
            &bad,
            "--db",
            &good.url(),
            "--ticker-period",
            "100ms",
        ],
        true,
    );
    let n = tick_count(good.pool(), "g").await;
    ticks_beyond(good.pool(), "g", n + 3).await;
    eventually("the bad database to be reported down", || async {
        (t.db_state("nowhere")?.as_str() == "down").then_some(())
    })
    .await;
    let health = t.health().unwrap();
    assert_eq!(health["ready"], false, "{health}");
}

#[tokio::test]
async fn exit_after_failure_exits_non_zero() {
    let port = pgq_testkit::free_port();
    let bad = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let mut t = TickerProc::spawn(&["--db", &bad, "--exit-after-failure", "2s"]);
    let code = t.wait_exit();
    assert_eq!(code, Some(3), "{}", t.logs());
    assert!(t.logs().contains("unreachable"), "{}", t.logs());
}
