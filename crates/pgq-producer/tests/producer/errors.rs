//! Every bad input is a typed error, whichever path it takes (single sends, a set-based batch,
//! COPY), and nothing of it is inserted.

use std::collections::HashMap;

use pgq_core::sqlx::PgPool;
use pgq_core::{MAX_FIELD_BYTES, QueueConfig};
use pgq_producer::{Error, ErrorKind, NewEvent, Producer, TypedEvent};
use pgq_testkit::TestDb;

use crate::common::{consume, q, setup};

/// The error of each path for `events`: sends in one transaction (the first error), a batch on
/// the pool (autocommit), a COPY in a transaction. Transactions are rolled back.
async fn every_path(pool: &PgPool, p: &Producer, events: &[NewEvent]) -> [Error; 3] {
    let mut tx = pool.begin().await.unwrap();
    let mut send_err = None;
    for ev in events {
        if let Err(e) = p.send(&mut *tx, ev).await {
            send_err = Some(e);
            break;
        }
    }
    tx.rollback().await.unwrap();
    let batch_err = p.send_batch(pool, events).await.unwrap_err();
    let mut tx = pool.begin().await.unwrap();
    let copy_err = p
        .copy_iter(&mut tx, events.iter().cloned())
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();
    [send_err.expect("send fails"), batch_err, copy_err]
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| NewEvent::new("t", i.to_string())).collect()
}

#[tokio::test]
async fn unknown_queue() {
    let db = TestDb::new().await;
    let p = Producer::new(q("no_such_queue"));
    for e in every_path(db.pool(), &p, &events(2)).await {
        assert_eq!(
            e.kind(),
            ErrorKind::Core(pgq_core::ErrorKind::QueueNotFound),
            "{e}"
        );
        assert!(e.to_string().contains("no_such_queue"), "{e}");
        assert!(e.to_string().contains("create it"), "{e}");
    }
}

#[tokio::test]
async fn insert_disabled() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "disabled").await;
    pgq_core::set_insert_disabled(&mut pool.acquire().await.unwrap(), &queue, true)
        .await
        .unwrap();
    let p = Producer::new(queue.clone());
    for e in every_path(pool, &p, &events(2)).await {
        assert_eq!(
            e.kind(),
            ErrorKind::Core(pgq_core::ErrorKind::InsertDisabled),
            "{e}"
        );
        assert_eq!(
            e.core_error().map(pgq_core::Error::kind),
            Some(pgq_core::ErrorKind::InsertDisabled)
        );
    }
    pgq_core::set_insert_disabled(&mut pool.acquire().await.unwrap(), &queue, false)
        .await
        .unwrap();
    assert!(consume(pool, &queue).await.is_empty());
}

#[tokio::test]
async fn per_transaction_limit() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "limited").await;
    let mut conn = pool.acquire().await.unwrap();
    let config = QueueConfig {
        per_tx_limit: Some(Some(3)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut conn, &queue, &config)
        .await
        .unwrap();
    drop(conn);
    let p = Producer::new(queue.clone());
    for e in every_path(pool, &p, &events(4)).await {
        assert_eq!(
            e.kind(),
            ErrorKind::Core(pgq_core::ErrorKind::PerTxLimit),
            "{e}"
        );
    }
    assert!(consume(pool, &queue).await.is_empty());
    // At the limit it works on every path.
    p.send_batch(pool, &events(3)).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    p.copy_iter(&mut tx, events(3)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(consume(pool, &queue).await.len(), 6);
}

#[tokio::test]
async fn nul_bytes_in_any_field() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "nul").await;
    let p = Producer::new(queue.clone());
    let mut evs = events(5);
    evs[3] = evs[3].clone().extra1("a\0b");
    let [send, batch, copy] = every_path(pool, &p, &evs).await;
    // A single send names the event as 0 (it is the only one).
    assert!(
        matches!(
            send,
            Error::NulByte {
                index: 0,
                field: "extra1",
                ..
            }
        ),
        "{send:?}"
    );
    for e in [batch, copy] {
        assert!(
            matches!(
                e,
                Error::NulByte {
                    index: 3,
                    field: "extra1",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("event 3: extra1 contains a NUL byte"),
            "{e}"
        );
    }
    for bad in [NewEvent::new("t\0", "d"), NewEvent::new("t", "\0")] {
        let e = p.send(pool, &bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NulByte, "{e}");
    }
    assert!(consume(pool, &queue).await.is_empty());
}

/// A batch of several statements names a bad event by its position in the whole call, and
/// inserts nothing (the statements before it are rolled back).
#[tokio::test]
async fn a_bad_event_in_a_later_chunk_is_named_by_its_position_in_the_call() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "chunks").await;
    let p = Producer::new(queue.clone()).with_batch_limits(2, usize::MAX);
    let mut evs = events(7);
    evs[5] = evs[5].clone().extra2("x\0");
    let e = p.send_batch(pool, &evs).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NulByte {
                index: 5,
                field: "extra2",
                ..
            }
        ),
        "{e:?}"
    );
    let mut tx = pool.begin().await.unwrap();
    let e = p.send_batch(&mut *tx, &evs).await.unwrap_err();
    assert!(e.to_string().starts_with("event 5: extra2"), "{e}");
    // The caller's transaction is still usable, and holds nothing of the batch.
    p.send(&mut *tx, &evs[0]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(consume(pool, &queue).await.len(), 1);
}

#[tokio::test]
async fn payload_over_the_field_limit() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "huge").await;
    let p = Producer::new(queue.clone());
    let huge = NewEvent::new("t", "x".repeat(MAX_FIELD_BYTES + 1));
    let evs = [NewEvent::new("t", "small"), huge];
    let e = p.send_batch(pool, &evs).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge { index: 1, field: "ev_data", len, .. } if len == MAX_FIELD_BYTES + 1
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    let e = p.send(pool, &evs[1]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    let mut tx = pool.begin().await.unwrap();
    let e = p.copy_iter(&mut tx, evs).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    tx.rollback().await.unwrap();
    assert!(consume(pool, &queue).await.is_empty());
}

/// Serializes fine unless `fail` is set.
struct Fragile {
    fail: bool,
}

impl serde::Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            Err(serde::ser::Error::custom("refused to serialize"))
        } else {
            s.serialize_u8(1)
        }
    }
}

impl TypedEvent for Fragile {
    const EVENT_TYPE: &'static str = "fragile";
}

#[tokio::test]
async fn values_that_fail_to_serialize() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = setup(pool, "ser").await;
    let p = Producer::new(queue.clone());
    // JSON object keys must be strings.
    let bad: HashMap<(i32, i32), i32> = [((1, 2), 3)].into_iter().collect();
    let e = p.send_json(pool, "map", &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    assert!(e.to_string().contains("\"map\""), "{e}");
    let e = p
        .send_typed(pool, &Fragile { fail: true })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    assert!(e.to_string().contains("refused to serialize"), "{e}");
    let values = [
        Fragile { fail: false },
        Fragile { fail: true },
        Fragile { fail: false },
    ];
    let e = p.send_typed_batch(pool, &values).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialize, "{e}");
    assert!(consume(pool, &queue).await.is_empty());
    p.send_typed(pool, &Fragile { fail: false }).await.unwrap();
    assert_eq!(consume(pool, &queue).await.len(), 1);
}
