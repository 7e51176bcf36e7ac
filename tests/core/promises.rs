//! README promises of the core layer with no other test: tick notifications go out once per
//! queue per ticker transaction and never per produced event; an unsupported pgq version is
//! refused with `UnsupportedVersion`.

use std::time::Duration;

use pgq_core::sqlx::PgPool;
use pgq_core::{ErrorKind, NewEvent, TICK_CHANNEL};
use pgq_testkit::TestDb;

use crate::common::setup;

/// The payloads on the tick channel up to (without) `marker`, sent after everything else: a
/// session gets notifications in commit order, so every earlier one has arrived by then.
async fn notifications_before_marker(
    pool: &PgPool,
    listener: &mut pgq_core::sqlx::postgres::PgListener,
) -> Vec<String> {
    pgq_core::sqlx::query("select pg_notify($1, 'marker')")
        .bind(TICK_CHANNEL)
        .execute(pool)
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), listener.recv())
            .await
            .expect("the marker notification")
            .unwrap();
        assert_eq!(n.channel(), TICK_CHANNEL);
        if n.payload() == "marker" {
            return got;
        }
        got.push(n.payload().to_owned());
    }
}

#[tokio::test]
async fn one_notification_per_queue_per_ticker_transaction_and_none_per_event() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (a, _) = setup(pool, "notify_a", "c").await;
    let (b, _) = setup(pool, "notify_b", "c").await;
    let mut listener = pgq_core::tick_listener(pool).await.unwrap();

    // Producing sends nothing: 200 events in one transaction, 20 in a transaction each.
    let events: Vec<NewEvent> = (0..200)
        .map(|i| NewEvent::new("t", i.to_string()))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    pgq_core::insert_events(&mut *tx, &a, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for i in 0..20 {
        pgq_core::insert_event(pool, &b, "t", &i.to_string())
            .await
            .unwrap();
    }
    assert_eq!(
        notifications_before_marker(pool, &mut listener).await,
        Vec::<String>::new(),
        "no notification per produced event"
    );

    // One ticker transaction ticking `a` three times and `b` once: one notification each.
    let mut tx = pool.begin().await.unwrap();
    for _ in 0..3 {
        pgq_core::tick_now(&mut tx, &a)
            .await
            .unwrap()
            .expect("a tick");
    }
    pgq_core::tick_now(&mut tx, &b)
        .await
        .unwrap()
        .expect("a tick");
    tx.commit().await.unwrap();
    let mut got = notifications_before_marker(pool, &mut listener).await;
    got.sort();
    assert_eq!(got, ["notify_a", "notify_b"]);

    // A transaction that ticks and rolls back notifies nobody; each committed one does.
    let mut tx = pool.begin().await.unwrap();
    pgq_core::tick_now(&mut tx, &a).await.unwrap();
    tx.rollback().await.unwrap();
    for _ in 0..2 {
        let mut conn = pool.acquire().await.unwrap();
        pgq_core::tick_now(&mut conn, &b).await.unwrap();
    }
    assert_eq!(
        notifications_before_marker(pool, &mut listener).await,
        ["notify_b", "notify_b"]
    );
}

#[tokio::test]
async fn an_unsupported_pgq_version_is_refused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::install(pool).await.expect("pgq 3.x is supported");
    // What a pgq 2 would answer.
    pgq_core::sqlx::raw_sql(
        "create or replace function pgq.version() returns text language sql \
         as $$ select '2.1.8' $$",
    )
    .execute(pool)
    .await
    .unwrap();
    let e = pgq_core::install(pool).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("2.1.8") && msg.contains("3."), "{msg}");
}
