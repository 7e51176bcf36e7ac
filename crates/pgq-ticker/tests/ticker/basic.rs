//! Ticking, the fast path, rotation, the retry mover and vacuum.

use std::time::Duration;

use pgq_core::EventId;
use pgq_testkit::{Cluster, TestDb};

use crate::util::{TICKER, TickerProc, busy_queue, c, eventually, q, tick_count, ticks_beyond};

#[tokio::test]
async fn ticks_appear() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "orders").await;
    let before = tick_count(db.pool(), "orders").await;
    let _t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--ticker-period", "100ms"]);
    let after = ticks_beyond(db.pool(), "orders", before + 2).await;
    assert!(after > before + 2);
}

#[tokio::test]
async fn lag0_queue_is_ticked_by_the_fast_path_and_consumers_are_notified() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &q("fast")).await.unwrap();
    sqlx::query("select pgq.set_queue_config('fast', 'ticker_max_lag', '0')")
        .execute(pool)
        .await
        .unwrap();
    pgq_core::register_consumer(pool, &q("fast"), &c("reader"))
        .await
        .unwrap();
    // A ticker period of an hour: only the fast path can tick after the first round.
    let t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--ticker-period", "1h"]);
    eventually("the ticker to start ticking", || async {
        t.logs().contains("ticking").then_some(())
    })
    .await;
    // Empty batches until the first round's tick is consumed.
    while let Some(b) = pgq_core::next_batch(pool, &q("fast"), &c("reader"))
        .await
        .unwrap()
    {
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    let mut listener = pgq_core::tick_listener(pool).await.unwrap();
    pgq_core::insert_event(pool, &q("fast"), "t", "hello")
        .await
        .unwrap();
    let note = tokio::time::timeout(crate::util::DEADLINE, listener.recv())
        .await
        .expect("a tick notification")
        .unwrap();
    assert_eq!(note.payload(), "fast");
    let batch = pgq_core::next_batch(pool, &q("fast"), &c("reader"))
        .await
        .unwrap()
        .expect("a batch after the fast tick");
    let events = pgq_core::get_batch_events(pool, batch).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].ev_data.as_deref(), Some("hello"));
}

#[tokio::test]
async fn rotation_happens_and_truncates() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "rot").await;
    sqlx::query("select pgq.set_queue_config('rot', 'rotation_period', '0')")
        .execute(pool)
        .await
        .unwrap();
    pgq_core::insert_event(pool, &q("rot"), "t", "old")
        .await
        .unwrap();
    let (pfx, cur): (String, i32) = sqlx::query_as(
        "select queue_data_pfx, queue_cur_table from pgq.queue where queue_name = 'rot'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let table = format!("{pfx}_{cur}");
    let count_sql = format!("select count(*) from {}", pgq_core::quote_fqname(&table));
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql.clone()))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let _t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "50ms",
            "--maint-period",
            "100ms",
        ],
    );
    // With no consumer holding it back, the queue rotates through all its tables; coming back
    // to the first one truncates it.
    eventually("the old event table to be truncated", || async {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql.clone()))
            .fetch_one(pool)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    let switched: bool = sqlx::query_scalar(
        "select queue_switch_time > now() - interval '1 minute' from pgq.queue where queue_name = 'rot'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(switched);
}

#[tokio::test]
async fn more_than_ten_due_retries_are_all_moved() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "re").await;
    pgq_core::register_consumer(pool, &q("re"), &c("worker"))
        .await
        .unwrap();
    for i in 0..25 {
        pgq_core::insert_event(pool, &q("re"), "t", &i.to_string())
            .await
            .unwrap();
    }
    pgq_core::tick_now(&mut pool.acquire().await.unwrap(), &q("re"))
        .await
        .unwrap();
    let mut retried = 0;
    while let Some(b) = pgq_core::next_batch(pool, &q("re"), &c("worker"))
        .await
        .unwrap()
    {
        for ev in pgq_core::get_batch_events(pool, b).await.unwrap() {
            pgq_core::event_retry(pool, b, EventId(ev.ev_id), Duration::ZERO)
                .await
                .unwrap();
            retried += 1;
        }
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    assert_eq!(retried, 25);
    let _t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "100ms",
            "--retry-period",
            "200ms",
        ],
    );
    eventually("the retry queue to be emptied", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from pgq.retry_queue")
            .fetch_one(pool)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    // The events come back with ev_retry = 1.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    eventually("the retried events to come back", || async {
        while let Some(b) = pgq_core::next_batch(pool, &q("re"), &c("worker"))
            .await
            .unwrap()
        {
            for ev in pgq_core::get_batch_events(pool, b).await.unwrap() {
                assert_eq!(ev.ev_retry, Some(1));
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            pgq_core::finish_batch(pool, b).await.unwrap();
        }
        (seen.load(std::sync::atomic::Ordering::Relaxed) == 25).then_some(())
    })
    .await;
}

#[tokio::test]
async fn vacuum_operations_run_when_autovacuum_is_off() {
    let cluster = Cluster::start_private().expect("private cluster");
    let db = TestDb::new_on(&cluster).await;
    let pool = db.pool();
    sqlx::query("alter system set autovacuum = off")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("select pg_reload_conf()")
        .execute(pool)
        .await
        .unwrap();
    eventually("autovacuum to be off", || async {
        let v: String = sqlx::query_scalar("select current_setting('autovacuum')")
            .fetch_one(&mut *pool.acquire().await.unwrap())
            .await
            .unwrap();
        (v == "off").then_some(())
    })
    .await;
    busy_queue(pool, "v").await;
    let tables = pgq_core::maint_tables_to_vacuum(pool).await.unwrap();
    assert!(tables.iter().any(|t| t == "pgq.tick"), "{tables:?}");
    let _t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--maint-period", "200ms"]);
    eventually("pgq.tick to be vacuumed", || async {
        let n: i64 = sqlx::query_scalar(
            "select coalesce(vacuum_count, 0) from pg_stat_all_tables where schemaname = 'pgq' and relname = 'tick'",
        )
        .fetch_one(&mut *pool.acquire().await.unwrap())
        .await
        .unwrap();
        (n > 0).then_some(())
    })
    .await;
}

/// A ticker started before the schema is installed says so (a warning, for a database named
/// explicitly) and starts ticking within seconds of the install, not a check period later.
#[tokio::test]
async fn a_ticker_started_before_install_warns_and_starts_within_seconds() {
    let db = TestDb::new_without_schema().await;
    let t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "100ms",
            "--check-period",
            "10m",
        ],
    );
    eventually("the warning that pgq is missing", || async {
        t.logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("pgq is not installed"))
            .then_some(())
    })
    .await;
    pgq_core::install(db.pool()).await.unwrap();
    busy_queue(db.pool(), "late").await;
    // Well before the 10-minute check period: the explicit database is looked at every 2 s.
    let before = tick_count(db.pool(), "late").await;
    ticks_beyond(db.pool(), "late", before + 2).await;
    assert!(t.logs().contains("pgq is installed now"), "{}", t.logs());
}

/// A retry comes back close to its due time, not a retry period later: the ticker runs its
/// retry mover when the earliest retry is due (here the retry period is 10 minutes).
#[tokio::test]
async fn retries_come_back_at_their_due_time_not_the_retry_period() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &q("retried")).await.unwrap();
    sqlx::query("select pgq.set_queue_config('retried', 'ticker_max_lag', '0')")
        .execute(pool)
        .await
        .unwrap();
    pgq_core::register_consumer(pool, &q("retried"), &c("r"))
        .await
        .unwrap();
    let _t = TickerProc::spawn(
        TICKER,
        &[
            "--db",
            &db.url(),
            "--ticker-period",
            "200ms",
            "--retry-period",
            "10m",
        ],
    );
    let id = pgq_core::insert_event(pool, &q("retried"), "t", "again")
        .await
        .unwrap();
    // Take the event and retry it in one second.
    let batch = eventually("the event's batch", || async {
        let b = pgq_core::next_batch(pool, &q("retried"), &c("r"))
            .await
            .unwrap()?;
        let events = pgq_core::get_batch_events(pool, b).await.unwrap();
        if events.iter().any(|e| e.id() == id) {
            Some(b)
        } else {
            pgq_core::finish_batch(pool, b).await.unwrap();
            None
        }
    })
    .await;
    pgq_core::event_retry(pool, batch, id, Duration::from_secs(1))
        .await
        .unwrap();
    pgq_core::finish_batch(pool, batch).await.unwrap();
    let back = eventually("the retried event back in a batch", || async {
        let b = pgq_core::next_batch(pool, &q("retried"), &c("r"))
            .await
            .unwrap()?;
        let events = pgq_core::get_batch_events(pool, b).await.unwrap();
        pgq_core::finish_batch(pool, b).await.unwrap();
        events.into_iter().find(|e| e.id() == id)
    })
    .await;
    assert_eq!(back.ev_retry, Some(1));
}
