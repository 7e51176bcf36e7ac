//! A half-open connection (the network drops without a FIN): `pgq tail --follow` gives up with
//! a clear message instead of waiting forever.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgq_testkit::{Relay, TestDb};

use crate::util::{ok, scalar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_through_a_frozen_connection_gives_up() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    let relay = Relay::start(db.cluster().port()).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args(["--db", &relay.url(&db.url()), "tail", "q", "c", "--follow"])
        .args(["--poll-interval", "200ms", "--db-timeout", "2s"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let n: i64 = scalar(
            &db,
            "select count(*) from pg_stat_activity
              where datname = current_database() and query ilike 'listen%'",
        )
        .await;
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tail never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.freeze();
    let frozen = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if frozen.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pgq tail --follow still waits on a frozen connection after a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "tail gave up {:.1}s after the freeze",
        frozen.elapsed().as_secs_f64()
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not answer within 2s"), "{stderr}");
}
