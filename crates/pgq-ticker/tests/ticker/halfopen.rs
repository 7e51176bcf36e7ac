//! Half-open connections: the network drops without a FIN (here a relay that stops forwarding
//! bytes while keeping every socket open).

use std::time::Instant;

use pgq_testkit::{Relay, TestDb};

use crate::util::{TICKER, TickerProc, busy_queue, eventually, tick_count, ticks_beyond};

/// The active ticker's connection freezes: the server ends its session within the stated bound
/// (here sized by the libpq keepalive parameters of its connection string), the ticker lock is
/// released and the standby takes over; the frozen ticker notices (its statement gets no answer)
/// and drops the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_ticker_loses_the_lock_and_the_standby_takes_over() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "ho").await;
    let relay = Relay::start(db.cluster().port()).await.unwrap();
    // keepalives_idle + keepalives_interval × keepalives_count = 2 s: the session's server-side
    // bound (idle_session_timeout) follows it.
    let url = format!(
        "{}?keepalives_idle=1&keepalives_interval=1&keepalives_count=1",
        relay.url(&db.url())
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ticker.toml");
    std::fs::write(
        &config,
        format!(
            "databases = [\"{url}\"]\nticker_period = \"100ms\"\ntick_statement_timeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let name = db.name().to_owned();
    let a = TickerProc::spawn_http(TICKER, &[config.to_str().unwrap()]);
    eventually("the ticker behind the relay to tick", || async {
        (a.db_state(&name)?.as_str() == "active").then_some(())
    })
    .await;
    let b = TickerProc::spawn_http(TICKER, &["--db", &db.url(), "--ticker-period", "100ms"]);
    eventually("the direct ticker to stand by", || async {
        (b.db_state(&name)?.as_str() == "standby").then_some(())
    })
    .await;

    relay.freeze();
    let frozen = Instant::now();
    let n = tick_count(db.pool(), "ho").await;
    eventually(
        "the standby to take over from the partitioned ticker",
        || async { (b.db_state(&name)?.as_str() == "active").then_some(()) },
    )
    .await;
    eprintln!(
        "the standby took over {:.1}s after the partition",
        frozen.elapsed().as_secs_f64()
    );
    ticks_beyond(db.pool(), "ho", n + 2).await;
    eventually("the partitioned ticker to notice", || async {
        a.logs()
            .contains("no answer from the database")
            .then_some(())
    })
    .await;
    eprintln!(
        "the partitioned ticker noticed {:.1}s after the partition",
        frozen.elapsed().as_secs_f64()
    );
    // It keeps trying to reconnect (through the frozen relay) without taking the lock back.
    assert_eq!(b.db_state(&name).as_deref(), Some("active"));
}
