//! The COPY bulk path and the set-based path with event times.

use chrono::{TimeZone, Utc};
use futures_util::stream;
use pgq_core::sqlx;
use pgq_core::{ErrorKind, NewEvent};
use pgq_testkit::TestDb;

use crate::common::{drain, setup, tick};

fn tricky(i: usize) -> NewEvent {
    NewEvent::new(format!("type\t{i}"), format!("line1\nline2\\back\r{i} ünï"))
        .extra1("tbl")
        .extra3(format!("x{i}"))
}

#[tokio::test]
async fn copy_round_trips_every_field_in_the_callers_transaction() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "copyq", "c").await;
    let when = Utc.with_ymd_and_hms(2024, 2, 29, 12, 30, 45).unwrap();
    let mut events: Vec<NewEvent> = (0..5000).map(tricky).collect();
    events[7] = events[7].clone().time(when);

    // Rolled back: nothing.
    let mut tx = pool.begin().await.unwrap();
    let n = pgq_core::copy_events(
        &mut tx,
        &q,
        stream::iter(events.clone().into_iter().map(Ok::<_, std::io::Error>)),
    )
    .await
    .unwrap();
    assert_eq!(n, 5000);
    tx.rollback().await.unwrap();
    tick(pool, &q).await;
    assert!(drain(pool, &q, &c).await.is_empty());

    // Committed: every field as sent.
    let mut tx = pool.begin().await.unwrap();
    let now: chrono::DateTime<Utc> = pgq_core::sqlx::query_scalar("select now()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    pgq_core::copy_events(
        &mut tx,
        &q,
        stream::iter(events.clone().into_iter().map(Ok::<_, std::io::Error>)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tick(pool, &q).await;
    let got = drain(pool, &q, &c).await;
    assert_eq!(got.len(), 5000);
    for (i, (ev, sent)) in got.iter().zip(&events).enumerate() {
        assert_eq!(
            ev.ev_type.as_deref(),
            Some(sent.ev_type.as_str()),
            "row {i}"
        );
        assert_eq!(
            ev.ev_data.as_deref(),
            Some(sent.ev_data.as_str()),
            "row {i}"
        );
        assert_eq!(ev.ev_extra1, sent.extra1);
        assert_eq!(ev.ev_extra2, None);
        assert_eq!(ev.ev_extra3, sent.extra3);
        assert_eq!(
            ev.ev_time,
            sent.time.unwrap_or(now),
            "row {i}: time is the given one or the transaction's"
        );
    }
}

#[tokio::test]
async fn a_copy_that_fails_half_way_leaves_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "copyfail", "c").await;
    let items = (0..20_000).map(|i| {
        if i == 15_000 {
            Err("source broke".to_owned())
        } else {
            Ok(tricky(i))
        }
    });
    let mut tx = pool.begin().await.unwrap();
    pgq_core::insert_event(&mut *tx, &q, "before", "x")
        .await
        .unwrap();
    let e = pgq_core::copy_events(&mut tx, &q, stream::iter(items))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("source broke"), "{e}");
    // The COPY failed inside the transaction, so the transaction can only roll back.
    // The failed COPY aborted the transaction: committing it rolls back, "before" included.
    tx.commit()
        .await
        .expect("COMMIT of an aborted transaction rolls it back, without an error");
    tick(pool, &q).await;
    assert!(drain(pool, &q, &c).await.is_empty());

    // Cancelled half way (the future dropped mid-stream): the server discards the COPY. The
    // connection is not reusable after that (documented), so it is detached and closed.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("begin").execute(&mut *conn).await.unwrap();
    let slow = stream::unfold(0usize, |i| async move {
        if i == 3000 {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        Some((Ok::<_, String>(tricky(i)), i + 1))
    });
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        pgq_core::copy_events(&mut conn, &q, slow),
    )
    .await;
    assert!(r.is_err(), "timed out (cancelled)");
    drop(conn.detach());
    tick(pool, &q).await;
    assert!(drain(pool, &q, &c).await.is_empty());
    // The pool still works.
    pgq_core::insert_event(pool, &q, "after", "y")
        .await
        .unwrap();
    tick(pool, &q).await;
    assert_eq!(drain(pool, &q, &c).await.len(), 1);
}

#[tokio::test]
async fn set_based_insert_with_event_times_and_raw_insert() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "timed", "c").await;
    let when = Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap();
    let ids = pgq_core::insert_events(
        pool,
        &q,
        &[NewEvent::new("a", "1").time(when), NewEvent::new("b", "2")],
    )
    .await
    .unwrap();
    let raw = pgq_core::RawEvent {
        ev_id: None,
        ev_time: when,
        ev_owner: None,
        ev_retry: Some(3),
        ev_type: Some("raw".into()),
        ev_data: Some("r".into()),
        ev_extra1: Some("e1".into()),
        ..Default::default()
    };
    let rid = pgq_core::insert_event_raw(pool, &q, &raw).await.unwrap();
    tick(pool, &q).await;
    let got = drain(pool, &q, &c).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].ev_id, ids[0].get());
    assert_eq!(got[0].ev_time, when);
    assert_ne!(got[1].ev_time, when);
    assert_eq!(got[2].ev_id, rid.get());
    assert_eq!(
        (got[2].ev_retry, got[2].ev_time, got[2].ev_extra1.as_deref()),
        (Some(3), when, Some("e1"))
    );
}
