//! The COPY path: bulk events in the caller's transaction; failing or cancelled half way leaves
//! nothing.

use futures_util::{StreamExt, stream};
use pgq_core::sqlx::Connection;
use pgq_producer::{CancellationToken, ErrorKind, NewEvent, Producer};
use pgq_testkit::TestDb;

use crate::common::{consume, setup};

fn ev(i: u64) -> NewEvent {
    NewEvent::new("copied", format!("row {i}\twith\\escapes\nand lines")).extra2(format!("x{i}"))
}

#[tokio::test]
async fn copy_inserts_a_stream_in_the_callers_transaction() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "copy").await;
    let p = Producer::new(q.clone());

    let mut tx = pool.begin().await.unwrap();
    let n = p
        .copy(
            &mut tx,
            stream::iter((0..30_000).map(|i| Ok::<_, std::io::Error>(ev(i)))),
        )
        .await
        .unwrap();
    assert_eq!(n, 30_000);
    let m = p
        .copy_iter(&mut tx, (30_000..30_010).map(ev))
        .await
        .unwrap();
    assert_eq!(m, 10);
    tx.commit().await.unwrap();

    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 30_010);
    for (i, e) in (0u64..).zip(&got) {
        let sent = ev(i);
        assert_eq!(e.ev_data.as_deref(), Some(sent.ev_data.as_str()), "row {i}");
        assert_eq!(e.ev_extra2, sent.extra2);
        assert_eq!(e.ev_type.as_deref(), Some("copied"));
    }
}

#[tokio::test]
async fn a_copy_whose_source_fails_half_way_leaves_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "copyfail").await;
    let p = Producer::new(q.clone());
    let mut tx = pool.begin().await.unwrap();
    let items = (0..20_000u64).map(|i| {
        if i == 12_345 {
            Err(std::io::Error::other("disk on fire"))
        } else {
            Ok(ev(i))
        }
    });
    let e = p.copy(&mut tx, stream::iter(items)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CopySource, "{e}");
    assert!(
        matches!(
            e,
            pgq_producer::Error::CopySource {
                events_read: 12_345,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("disk on fire"), "{e}");
    let source = std::error::Error::source(&e).expect("the source's error is kept");
    assert_eq!(source.to_string(), "disk on fire");
    tx.rollback().await.unwrap();
    assert!(consume(pool, &q).await.is_empty());

    // An invalid event half way: typed, with its position; nothing inserted either.
    let mut tx = pool.begin().await.unwrap();
    let items = (0..10_000u64).map(|i| {
        if i == 5000 {
            ev(i).extra4("bad\0")
        } else {
            ev(i)
        }
    });
    let e = p.copy_iter(&mut tx, items).await.unwrap_err();
    assert!(
        matches!(
            e,
            pgq_producer::Error::NulByte {
                index: 5000,
                field: "extra4",
                ..
            }
        ),
        "{e:?}"
    );
    tx.rollback().await.unwrap();
    assert!(consume(pool, &q).await.is_empty());
}

#[tokio::test]
async fn a_cancelled_copy_leaves_nothing_and_the_connection_usable() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "copycancel").await;
    let p = Producer::new(q.clone());
    let token = CancellationToken::new();

    // The source cancels the token itself after 3000 events (a deterministic "cancel from
    // elsewhere"); the next event is never asked for.
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let t = token.clone();
    let items = stream::iter(0..1_000_000u64).map(move |i| {
        if i == 2999 {
            t.cancel();
        }
        Ok::<_, std::io::Error>(ev(i))
    });
    let e = p
        .copy_cancellable(&mut tx, items, &token)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CopyCancelled, "{e}");
    assert!(
        matches!(
            e,
            pgq_producer::Error::CopyCancelled {
                events_read: 3000,
                ..
            }
        ),
        "{e:?}"
    );
    tx.rollback().await.unwrap();
    // Same connection, still in step with the server.
    p.send(&mut *conn, &NewEvent::new("after", "x"))
        .await
        .unwrap();
    drop(conn);
    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ev_type.as_deref(), Some("after"));

    // A token cancelled before the start: nothing is read at all.
    let mut tx = pool.begin().await.unwrap();
    let e = p
        .copy_cancellable(
            &mut tx,
            stream::iter([Ok::<_, std::io::Error>(ev(0))]),
            &token,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, pgq_producer::Error::CopyCancelled { events_read: 0, .. }),
        "{e:?}"
    );
    tx.rollback().await.unwrap();
    assert!(consume(pool, &q).await.is_empty());
}
