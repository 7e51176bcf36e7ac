//! README promises of pgq-ticker with no other test: the `/metrics` content, the stats line,
//! the warning when another ticker (pgqd) ticks the same database, and `connection_lifetime`.

use std::collections::BTreeSet;

use pgq_testkit::{Pgqd, TestDb};
use sqlx::Connection;

use crate::util::{
    TICKER, TickerProc, busy_queue, c, eventually, http_get, q, tick_count, ticks_beyond,
};

/// A queue `m` with consumer `c` and one dead letter of it.
async fn queue_with_a_dead_letter(pool: &sqlx::PgPool) {
    busy_queue(pool, "m").await;
    pgq_core::register_consumer(pool, &q("m"), &c("c"))
        .await
        .unwrap();
    pgq_core::insert_event(pool, &q("m"), "t", "d")
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, &q("m")).await.unwrap();
    let b = pgq_core::next_batch(pool, &q("m"), &c("c"))
        .await
        .unwrap()
        .expect("a batch");
    let events = pgq_core::get_batch_events(pool, b).await.unwrap();
    let letters: Vec<_> = events
        .iter()
        .map(|event| pgq_core::NewDeadLetter {
            event,
            reason: "test",
        })
        .collect();
    pgq_core::insert_dead_letters(pool, &q("m"), &c("c"), &letters)
        .await
        .unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
}

#[tokio::test]
async fn metrics_the_stats_line_and_a_warning_about_another_ticker() {
    let db = TestDb::new().await;
    let pool = db.pool();
    queue_with_a_dead_letter(pool).await;
    // pgqd's sessions are named `pgqd`: one is connected to this database.
    let opts: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
    let mut pgqd = sqlx::PgConnection::connect_with(&opts.application_name("pgqd"))
        .await
        .unwrap();
    sqlx::query("select 1").execute(&mut pgqd).await.unwrap();
    let t = TickerProc::spawn_http(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "100ms",
            "--stats-period",
            "1s",
        ],
    );
    let port = t.http_port().unwrap();
    let db_label = format!("/{}", db.name());
    let names = [
        "pgq_ticker_ticks_total",
        "pgq_ticker_database_up",
        "pgq_ticker_database_active",
        "pgq_queue_tick_lag_seconds",
        "pgq_queue_events_per_second",
        "pgq_queue_new_events",
        "pgq_consumer_lag_seconds",
        "pgq_consumer_pending_events",
        "pgq_queue_delivery_lag_seconds",
        "pgq_xmin_horizon_age_seconds",
        "pgq_dead_letters",
    ];
    // Every documented series of this database, once the first stats round has run.
    let started = std::time::Instant::now();
    let body = loop {
        let body = http_get(port, "/metrics").unwrap_or_default();
        let missing: Vec<_> = names
            .iter()
            .filter(|n| {
                !body
                    .lines()
                    .any(|l| l.starts_with(&format!("{n}{{")) && l.contains(&db_label))
            })
            .collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            started.elapsed() < crate::util::DEADLINE,
            "missing {missing:?} for {db_label}:\n{body}\n{}",
            t.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let value = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&db_label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} line:\n{body}"))
    };
    assert_eq!(value("pgq_ticker_database_up{"), 1.0);
    assert_eq!(value("pgq_ticker_database_active{"), 1.0);
    assert!(value("pgq_ticker_ticks_total{") >= 1.0);
    let dead = body
        .lines()
        .find(|l| {
            l.starts_with("pgq_dead_letters{")
                && l.contains("queue=\"m\"")
                && l.contains("consumer=\"c\"")
        })
        .unwrap_or_else(|| panic!("no dead-letter gauge for m/c:\n{body}"));
    assert!(dead.ends_with(" 1"), "{dead}");

    // The stats line, like pgqd's.
    eventually("the stats line", || async {
        t.logs()
            .lines()
            .any(|l| l.contains("{ticks: ") && l.contains("maint: ") && l.contains("databases: {"))
            .then_some(())
    })
    .await;
    // The other ticker is named in a warning.
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut pgqd)
        .await
        .unwrap();
    eventually("a warning about pgqd", || async {
        t.logs()
            .lines()
            .any(|l| {
                l.contains("another ticker (pgqd?) is ticking this database too")
                    && l.contains(&pid.to_string())
            })
            .then_some(())
    })
    .await;
}

/// Sessions older than `connection_lifetime` are replaced: every session the ticker had at
/// first is gone after a while, and it keeps ticking on new ones.
#[tokio::test]
async fn sessions_are_recycled_after_connection_lifetime() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "r").await;
    let _t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "100ms",
            "--connection-lifetime",
            "2s",
        ],
    );
    let sessions = || async {
        sqlx::query_scalar::<_, i32>(
            "select pid from pg_stat_activity \
             where datname = current_database() and application_name = 'pgq-ticker'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect::<BTreeSet<i32>>()
    };
    let first = eventually("the ticker's sessions", || async {
        let s = sessions().await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    eventually("every first session to be replaced", || async {
        let now = sessions().await;
        (!now.is_empty() && now.is_disjoint(&first)).then_some(())
    })
    .await;
    let n = tick_count(pool, "r").await;
    ticks_beyond(pool, "r", n + 2).await;
}

/// A real pgqd ticking the same database (pgqd does not take the ticker lock): pgq-ticker names
/// it in a warning. pgqd is an interop peer: missing, this test fails under
/// `PGQ_REQUIRE_PEERS=1` (or `CI=true`) and is reported as SKIPPED otherwise.
#[tokio::test]
async fn a_real_pgqd_on_the_same_database_is_warned_about() {
    if !Pgqd::available() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "both").await;
    let mut pgqd = Pgqd::start(&format!(
        "base_connstr = host=127.0.0.1 port={} user=postgres\ndatabase_list = {}\n\
         ticker_period = 0.1\n",
        db.cluster().port(),
        db.name()
    ));
    // pgqd ticks on its own first: its session is there before pgq-ticker looks.
    let n = tick_count(pool, "both").await;
    ticks_beyond(pool, "both", n + 2).await;
    let pgqd_pids: Vec<i32> = sqlx::query_scalar(
        "select pid from pg_stat_activity where datname = current_database() \
           and pid <> pg_backend_pid() and query ilike '%pgq.%' and application_name <> 'pgq-ticker'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!pgqd_pids.is_empty(), "no pgqd session\n{}", pgqd.log());
    let t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "100ms",
            "--stats-period",
            "1s",
            "--check-period",
            "1s",
        ],
    );
    eventually("a warning naming pgqd's session", || async {
        t.lines()
            .iter()
            .any(|l| {
                l.contains("WARN")
                    && l.contains("another ticker (pgqd?) is ticking this database too")
                    && pgqd_pids.iter().any(|p| l.contains(&format!("pid={p}")))
            })
            .then_some(())
    })
    .await;
    assert!(pgqd.running(), "pgqd stopped\n{}", pgqd.log());
}
