//! Hot standby, server restarts and unreachable databases.

use std::time::{Duration, Instant};

use pgq_testkit::{Cluster, TestDb};

use crate::util::{TICKER, TickerProc, busy_queue, eventually, tick_count, ticks_beyond};

#[tokio::test]
async fn two_tickers_one_ticks_the_other_takes_over_after_sigkill() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "ha").await;
    let args = ["--db", &db.url(), "--ticker-period", "100ms"];
    let a = TickerProc::spawn_http(TICKER, &args);
    let b = TickerProc::spawn_http(TICKER, &args);
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
    let t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--ticker-period", "100ms"]);
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
        TICKER,
        &[
            "--db",
            &bad,
            "--db",
            &good.url(),
            "--ticker-period",
            "100ms",
        ],
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

/// `--exit-after-failure 3s` with an unreachable database: exit status 3, not before 3 s (the
/// database is down from the start) and well before a much larger bound.
#[tokio::test]
async fn exit_after_failure_exits_non_zero_after_its_duration() {
    let port = pgq_testkit::free_port();
    let bad = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let started = Instant::now();
    let mut t = TickerProc::spawn(TICKER, &["--db", &bad, "--exit-after-failure", "3s"]);
    let status = t
        .exit_within(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after the start\n{}", t.logs()));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(3), "{}", t.logs());
    assert!(
        took >= Duration::from_secs(3),
        "exited after {took:?}, before the 3 s it was given\n{}",
        t.logs()
    );
    assert!(t.logs().contains("unreachable"), "{}", t.logs());
}

/// The reconnect backoff cap (docs/ticker.md: 0.5 s doubling to 3 s, each delay 50–150% of
/// that).
const BACKOFF_CAP: Duration = Duration::from_secs(3);

/// The longest a jittered delay at the cap can be, plus a margin for a busy machine.
fn longest_gap() -> Duration {
    BACKOFF_CAP.mul_f64(1.5) + Duration::from_secs(2)
}

/// With the server down for 25 s, the reconnect attempts are spaced (never a busy loop) and
/// never further apart than the cap (an uncapped doubling would be at 8–24 s by then); when the
/// server is back, ticking resumes within the cap and a margin.
#[tokio::test]
async fn reconnects_are_capped_and_ticking_resumes_within_the_cap() {
    let cluster = Cluster::start_private().expect("private cluster");
    let db = TestDb::new_on(&cluster).await;
    busy_queue(db.pool(), "cap").await;
    let t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--ticker-period", "100ms"]);
    let n = tick_count(db.pool(), "cap").await;
    let n = ticks_beyond(db.pool(), "cap", n + 1).await;
    db.pool().close().await;
    let down = Instant::now();
    cluster.stop_immediate().expect("stop");
    tokio::time::sleep(Duration::from_secs(25)).await;
    cluster.start().expect("start");
    let up = Instant::now();
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    ticks_beyond(&pool, "cap", n).await;
    let resumed = up.elapsed();

    let label = format!("/{}", db.name());
    let lines = t.timed_lines();
    let of_db = |l: &&pgq_testkit::LogLine| l.at >= down && l.text.contains(&label);
    // Each failed attempt is one line ("connect: ..."), then "database reachable again".
    let attempts: Vec<Instant> = lines
        .iter()
        .filter(of_db)
        .filter(|l| l.text.contains(" connect: "))
        .map(|l| l.at)
        .collect();
    let back = lines
        .iter()
        .filter(of_db)
        .find(|l| l.text.contains("database reachable again"))
        .unwrap_or_else(|| panic!("no line saying the database is back\n{}", t.logs()))
        .at;
    let mut times = attempts.clone();
    times.push(back);
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!(
        "{} failed attempts in 25 s, gaps {gaps:.2?}; ticking resumed {:.1}s after the server was back",
        attempts.len(),
        resumed.as_secs_f64()
    );
    // 25 s at no more than 4.5 s apart: at least 5 attempts.
    assert!(attempts.len() >= 5, "{gaps:?}\n{}", t.logs());
    assert!(
        gaps.iter().all(|g| *g <= longest_gap().as_secs_f64()),
        "reconnect attempts further apart than the {BACKOFF_CAP:?} cap allows: {gaps:?}\n{}",
        t.logs()
    );
    assert!(
        gaps.iter().all(|g| *g >= 0.2),
        "reconnect attempts without the backoff: {gaps:?}"
    );
    assert!(
        resumed <= longest_gap() + Duration::from_secs(8),
        "ticking resumed {resumed:?} after the server was back\n{}",
        t.logs()
    );
}
