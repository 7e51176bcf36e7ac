//! Single events: plain, JSON and typed, in the caller's transaction.

use chrono::{TimeZone, Utc};
use pgq_producer::{Extras, NewEvent, Producer, TypedEvent};
use pgq_testkit::TestDb;

use crate::common::{consume, setup};

#[derive(serde::Serialize)]
struct OrderCreated {
    id: i64,
    customer: String,
    region: &'static str,
}

impl TypedEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order.created";
    fn extras(&self) -> Extras {
        Extras {
            extra1: Some(self.customer.clone()),
            extra4: Some(self.region.to_owned()),
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn send_plain_json_and_typed_events_commit_with_the_transaction() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "orders").await;
    let p = Producer::new(q.clone());
    let when = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();

    let mut tx = pool.begin().await.unwrap();
    let a = p
        .send(
            &mut *tx,
            &NewEvent::new("plain", "data\twith\ttabs")
                .extra2("e2")
                .extra3("e3"),
        )
        .await
        .unwrap();
    let b = p
        .send_json(&mut *tx, "json", &serde_json_value())
        .await
        .unwrap();
    let c = p
        .send_typed(
            &mut *tx,
            &OrderCreated {
                id: 7,
                customer: "acme".into(),
                region: "eu",
            },
        )
        .await
        .unwrap();
    let d = p
        .send(&mut *tx, &NewEvent::new("timed", "t").time(when))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let got = consume(pool, &q).await;
    let ids: Vec<i64> = got.iter().map(|e| e.ev_id).collect();
    assert_eq!(ids, [a.get(), b.get(), c.get(), d.get()]);
    assert_eq!(
        (
            got[0].ev_type.as_deref(),
            got[0].ev_data.as_deref(),
            got[0].ev_extra1.as_deref(),
            got[0].ev_extra2.as_deref(),
            got[0].ev_extra3.as_deref(),
            got[0].ev_extra4.as_deref()
        ),
        (
            Some("plain"),
            Some("data\twith\ttabs"),
            None,
            Some("e2"),
            Some("e3"),
            None
        )
    );
    assert_eq!(got[1].ev_type.as_deref(), Some("json"));
    assert_eq!(
        got[1].ev_data.as_deref(),
        Some(r#"{"a":[1,2],"nul":"x\u0000y"}"#)
    );
    assert_eq!(got[2].ev_type.as_deref(), Some("order.created"));
    assert_eq!(
        got[2].ev_data.as_deref(),
        Some(r#"{"id":7,"customer":"acme","region":"eu"}"#)
    );
    assert_eq!(got[2].ev_extra1.as_deref(), Some("acme"));
    assert_eq!(got[2].ev_extra4.as_deref(), Some("eu"));
    assert_eq!(got[3].ev_time, when);
    assert_ne!(got[0].ev_time, when);
}

/// A JSON value with a NUL character: serde_json escapes it, so it is a valid payload.
fn serde_json_value() -> std::collections::BTreeMap<&'static str, serde_json::Value> {
    [
        ("a", serde_json::json!([1, 2])),
        ("nul", serde_json::json!("x\u{0}y")),
    ]
    .into_iter()
    .collect()
}

#[tokio::test]
async fn a_rolled_back_transaction_produces_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "rb").await;
    let p = Producer::new(q.clone());
    let mut tx = pool.begin().await.unwrap();
    p.send(&mut *tx, &NewEvent::new("t", "1")).await.unwrap();
    p.send_batch(
        &mut *tx,
        &[NewEvent::new("t", "2"), NewEvent::new("t", "3")],
    )
    .await
    .unwrap();
    p.copy_iter(&mut tx, [NewEvent::new("t", "4")])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(consume(pool, &q).await.is_empty());

    // The same on a pool (autocommit) is committed at once.
    p.send(pool, &NewEvent::new("t", "5")).await.unwrap();
    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ev_data.as_deref(), Some("5"));
}
