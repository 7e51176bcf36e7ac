//! Set-based batches: one statement per chunk, all or nothing.

use pgq_core::QueueConfig;
use pgq_producer::{ErrorKind, NewEvent, Producer, TypedEvent};
use pgq_testkit::TestDb;

use crate::common::{consume, setup};

fn ev(i: usize) -> NewEvent {
    NewEvent::new(format!("t{}", i % 3), format!("payload {i}")).extra1(format!("k{i}"))
}

#[tokio::test]
async fn send_batch_returns_ids_in_order_across_chunks() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "batch").await;
    let events: Vec<NewEvent> = (0..2500).map(ev).collect();

    // One chunk (the default limits), then forced small chunks on a pool and in a transaction.
    let p = Producer::new(q.clone());
    let ids = p.send_batch(pool, &events).await.unwrap();
    let small = Producer::new(q.clone()).with_batch_limits(300, 1 << 20);
    let ids2 = small.send_batch(pool, &events).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let by_bytes = Producer::new(q.clone()).with_batch_limits(10_000, 2000);
    let ids3 = by_bytes.send_batch(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    assert!(p.send_batch(pool, &[]).await.unwrap().is_empty());

    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 7500);
    let all_ids: Vec<i64> = ids
        .iter()
        .chain(&ids2)
        .chain(&ids3)
        .map(|i| i.get())
        .collect();
    assert_eq!(all_ids, got.iter().map(|e| e.ev_id).collect::<Vec<_>>());
    for (i, e) in got.iter().enumerate() {
        let sent = ev(i % 2500);
        assert_eq!(e.ev_type.as_deref(), Some(sent.ev_type.as_str()));
        assert_eq!(e.ev_data.as_deref(), Some(sent.ev_data.as_str()));
        assert_eq!(e.ev_extra1, sent.extra1);
        assert_eq!(e.ev_extra2, None);
    }
}

#[tokio::test]
async fn a_multi_chunk_batch_that_fails_half_way_inserts_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "halfway").await;
    // The second chunk goes over the per-transaction limit: the first must not stay committed,
    // even though the batch was sent on a pool (autocommit).
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::set_queue_config(
        &mut conn,
        &q,
        &QueueConfig {
            per_tx_limit: Some(Some(15)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    drop(conn);
    let p = Producer::new(q.clone()).with_batch_limits(10, usize::MAX);
    let events: Vec<NewEvent> = (0..20).map(ev).collect();
    let e = p.send_batch(pool, &events).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::PerTxLimit),
        "{e}"
    );
    assert!(consume(pool, &q).await.is_empty());
    // Within the limit it works.
    assert_eq!(p.send_batch(pool, &events[..15]).await.unwrap().len(), 15);
    assert_eq!(consume(pool, &q).await.len(), 15);
}

#[derive(serde::Serialize)]
struct Tick {
    n: u32,
}

impl TypedEvent for Tick {
    const EVENT_TYPE: &'static str = "tick";
}

#[tokio::test]
async fn typed_batches() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "typed").await;
    let p = Producer::new(q.clone());
    let values: Vec<Tick> = (0..100).map(|n| Tick { n }).collect();
    p.send_typed_batch(pool, &values).await.unwrap();
    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 100);
    assert_eq!(got[42].ev_type.as_deref(), Some("tick"));
    assert_eq!(got[42].ev_data.as_deref(), Some(r#"{"n":42}"#));
}

/// A web handler runs in a spawned task and sends in its own transaction: `send_batch` and
/// `send_typed_batch` with `&mut *tx` (and a pooled connection) must compile there, i.e. their
/// futures are `Send` (before they were boxed, this test did not compile: "implementation of
/// `Acquire` is not general enough").
#[tokio::test]
async fn batches_can_be_sent_from_a_spawned_task_in_its_transaction() {
    #[derive(serde::Serialize)]
    struct Order {
        id: u32,
    }
    impl TypedEvent for Order {
        const EVENT_TYPE: &'static str = "order";
    }
    let db = TestDb::new().await;
    let pool = db.pool().clone();
    let q = setup(&pool, "spawned").await;
    let task = tokio::spawn({
        let (pool, q) = (pool.clone(), q.clone());
        async move {
            let p = Producer::new(q);
            let mut tx = pool.begin().await?;
            p.send_batch(&mut *tx, &[ev(0), ev(1)]).await?;
            p.send_typed_batch(&mut *tx, &[Order { id: 7 }]).await?;
            tx.commit().await?;
            let mut conn = pool.acquire().await?;
            p.send_batch(&mut *conn, &[ev(2)]).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
    });
    task.await.unwrap().unwrap();
    let got = consume(&pool, &q).await;
    let types: Vec<_> = got.iter().map(|e| e.ev_type.clone().unwrap()).collect();
    assert_eq!(types, ["t0", "t1", "order", "t2"]);
}
