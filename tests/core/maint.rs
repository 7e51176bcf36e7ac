//! Ticker functions, maintenance and rotation, queue configuration and information.

use std::time::Duration;

use pgq_core::sqlx::{self, PgPool};
use pgq_core::{NewEvent, QueueConfig, TickId};
use pgq_testkit::{Cluster, TestDb};

use crate::common::{drain, q, setup, tick};

/// One maintenance round as a ticker runs it: each operation repeated while it returns non-zero,
/// every call in its own transaction.
async fn maint_round(pool: &PgPool) -> usize {
    let mut conn = pool.acquire().await.unwrap();
    let ops = pgq_core::maint_operations(&mut *conn).await.unwrap();
    for op in &ops {
        while pgq_core::run_maint_operation(&mut conn, op).await.unwrap() != 0 {}
    }
    ops.len()
}

async fn cur_table(pool: &PgPool, queue: &str) -> i32 {
    sqlx::query_scalar("select queue_cur_table from pgq.queue where queue_name = $1")
        .bind(queue)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn rows_in(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from only {}",
        pgq_core::quote_fqname(table)
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rotation_truncates_old_tables_only_after_consumers_pass() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (qn, cn) = setup(pool, "rot", "c").await;
    let cfg = QueueConfig {
        rotation_period: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &qn, &cfg)
        .await
        .unwrap();

    let first_table = pgq_core::current_event_table(pool, &qn).await.unwrap();
    pgq_core::insert_events(pool, &qn, &vec![NewEvent::new("t", "keep me"); 10])
        .await
        .unwrap();
    tick(pool, &qn).await;

    // The consumer has not moved: no rotation however often maintenance runs.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        maint_round(pool).await;
        tick(pool, &qn).await;
    }
    assert_eq!(cur_table(pool, "rot").await, 0);
    assert_eq!(rows_in(pool, &first_table).await, 10);

    // Once the consumer follows, the tables rotate round until the first one is truncated.
    assert_eq!(drain(pool, &qn, &cn).await.len(), 10);
    let mut seen = vec![0];
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        maint_round(pool).await;
        tick(pool, &qn).await;
        drain(pool, &qn, &cn).await;
        let t = cur_table(pool, "rot").await;
        if seen.last() != Some(&t) {
            seen.push(t);
        }
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(seen, vec![0, 1, 2, 0], "rotated through all three tables");
    assert_eq!(rows_in(pool, &first_table).await, 0, "old events truncated");
    let info = pgq_core::get_queue_info(pool, &qn).await.unwrap();
    assert_eq!(info.queue_cur_table, 0);
    assert_eq!(info.queue_ntables, 3);

    // Events keep flowing after rotation.
    pgq_core::insert_event(pool, &qn, "t", "after")
        .await
        .unwrap();
    tick(pool, &qn).await;
    assert_eq!(drain(pool, &qn, &cn).await.len(), 1);
}

#[tokio::test]
async fn rotation_steps_can_be_called_directly() {
    // A cluster of its own: other tests' open transactions (txids are cluster-wide) would hold
    // the tick snapshots' xmin back and rightly postpone rotation, so on the shared cluster this
    // test could only retry until rotation happens, which would hide a rotation bug too.
    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    let pool = db.pool();
    let (qn, cn) = setup(pool, "steps", "c").await;
    let cfg = QueueConfig {
        rotation_period: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &qn, &cfg)
        .await
        .unwrap();
    // The consumer moves past the queue's creation; the 1 ms rotation period passes.
    tick(pool, &qn).await;
    drain(pool, &qn, &cn).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    pgq_core::maint_rotate_tables_step1(pool, &qn)
        .await
        .unwrap();
    assert_eq!(cur_table(pool, "steps").await, 1);
    assert_eq!(pgq_core::maint_rotate_tables_step2(pool).await.unwrap(), 0);
    pgq_core::vacuum_table(pool, "pgq.tick").await.unwrap();
    for t in pgq_core::maint_tables_to_vacuum(pool).await.unwrap() {
        pgq_core::vacuum_table(pool, &t).await.unwrap();
    }
}

#[tokio::test]
async fn ticker_variants() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (qn, cn) = setup(pool, "tk", "c").await;
    // A queue with only its creation tick is ticked again (idleness is judged from the gap
    // between the last two ticks) ...
    let second = pgq_core::ticker_queue(pool, &qn)
        .await
        .unwrap()
        .expect("a second tick");
    assert_eq!(
        pgq_core::get_queue_info(pool, &qn)
            .await
            .unwrap()
            .last_tick_id,
        Some(second)
    );
    // ... then, just ticked and below every threshold, it is not ticked again.
    assert_eq!(pgq_core::ticker_queue(pool, &qn).await.unwrap(), None);
    // Enough events: it ticks.
    let cfg = QueueConfig {
        ticker_max_count: Some(3),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &qn, &cfg)
        .await
        .unwrap();
    pgq_core::insert_events(pool, &qn, &vec![NewEvent::new("t", "d"); 5])
        .await
        .unwrap();
    let t = pgq_core::ticker_queue(pool, &qn)
        .await
        .unwrap()
        .expect("ticked");
    assert_eq!(
        pgq_core::get_queue_info(pool, &qn)
            .await
            .unwrap()
            .last_tick_id,
        Some(t)
    );
    assert_eq!(drain(pool, &qn, &cn).await.len(), 5);
    // pgq.ticker() for all queues.
    pgq_core::insert_events(pool, &qn, &vec![NewEvent::new("t", "d"); 5])
        .await
        .unwrap();
    assert_eq!(
        pgq_core::ticker(pool).await.unwrap(),
        1,
        "the one queue ticked"
    );
    assert_eq!(drain(pool, &qn, &cn).await.len(), 5);
    // force_tick makes the next ticker call tick.
    let last = pgq_core::force_tick(pool, &qn).await.unwrap();
    let t2 = pgq_core::ticker_queue(pool, &qn)
        .await
        .unwrap()
        .expect("forced");
    assert!(t2 > last);

    // An external ticker supplies its own ticks.
    let ext = q("ext");
    pgq_core::create_queue(pool, &ext).await.unwrap();
    let cfg = QueueConfig {
        external_ticker: Some(true),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &ext, &cfg)
        .await
        .unwrap();
    let info = pgq_core::get_queue_info(pool, &ext).await.unwrap();
    assert!(info.queue_external_ticker);
    let next = TickId(info.last_tick_id.unwrap().get() + 10);
    let got = pgq_core::ticker_external(pool, &ext, next, chrono::Utc::now(), 1000)
        .await
        .unwrap();
    assert_eq!(got, next);
    assert_eq!(
        pgq_core::get_queue_info(pool, &ext)
            .await
            .unwrap()
            .last_tick_id,
        Some(next)
    );
}

#[tokio::test]
async fn queue_config_and_info() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let qn = q("cfg");
    assert!(pgq_core::create_queue(pool, &qn).await.unwrap());
    assert!(!pgq_core::create_queue(pool, &qn).await.unwrap(), "exists");
    let cfg = QueueConfig {
        ticker_max_count: Some(42),
        ticker_max_lag: Some(Duration::from_millis(250)),
        ticker_idle_period: Some(Duration::from_secs(7)),
        ticker_paused: Some(true),
        rotation_period: Some(Duration::from_secs(3600)),
        external_ticker: Some(false),
        disable_insert: Some(true),
        per_tx_limit: Some(Some(9)),
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &qn, &cfg)
        .await
        .unwrap();
    let stored = pgq_core::get_queue_config(pool, &qn).await.unwrap();
    assert_eq!(stored.ticker_max_count, 42);
    assert_eq!(stored.ticker_max_lag, Duration::from_millis(250));
    assert_eq!(stored.ticker_idle_period, Duration::from_secs(7));
    assert!(stored.ticker_paused && stored.disable_insert && !stored.external_ticker);
    assert_eq!(stored.rotation_period, Duration::from_secs(3600));
    assert_eq!(stored.per_tx_limit, Some(9));

    let info = pgq_core::get_queue_info(pool, &qn).await.unwrap();
    assert_eq!(info.queue_name, "cfg");
    assert_eq!(info.queue_ticker_max_count, 42);
    assert_eq!(info.queue_ticker_max_lag, Duration::from_millis(250));
    assert!(info.queue_ticker_paused);
    assert!(info.last_tick_id.is_some());
    let all = pgq_core::get_queue_info_all(pool).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|i| i.queue_name.as_str())
            .collect::<Vec<_>>(),
        vec!["cfg"]
    );

    pgq_core::drop_queue(pool, &qn, true).await.unwrap();
    assert!(!pgq_core::queue_exists(pool, &qn).await.unwrap());
}

#[tokio::test]
async fn forced_drop_removes_consumers() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (qn, _) = setup(pool, "dropme", "c").await;
    pgq_core::drop_queue(pool, &qn, true).await.unwrap();
    assert!(
        pgq_core::get_consumer_info_all(pool)
            .await
            .unwrap()
            .is_empty()
    );
}
