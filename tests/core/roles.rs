//! Least privilege: a pgq_writer-only role produces, a pgq_reader-only role consumes, and a
//! missing privilege names the pgq role that grants it.

use futures_util::TryStreamExt;
use pgq_core::sqlx::PgPool;
use pgq_core::{ErrorKind, NewEvent, PgqRole};
use pgq_testkit::TestDb;

use crate::common::{c, q, tick};

async fn role_pool(db: &TestDb, role: &str, granted: &str) -> PgPool {
    let name = db.create_role(role, granted, None).await;
    db.pool_as(&name).await
}

#[tokio::test]
async fn writer_produces_and_reader_consumes_with_least_privilege() {
    let db = TestDb::new().await;
    let admin = db.pool();
    let queue = q("roles");
    pgq_core::create_queue(admin, &queue).await.unwrap();
    let writer = role_pool(&db, "w", "pgq_writer").await;
    let reader = role_pool(&db, "r", "pgq_reader").await;
    let admin_only = role_pool(&db, "a", "pgq_admin").await;

    // Writer: single and set-based inserts, in its own transaction.
    let mut tx = writer.begin().await.unwrap();
    pgq_core::insert_event(&mut *tx, &queue, "one", "1")
        .await
        .unwrap();
    pgq_core::insert_events(
        &mut *tx,
        &queue,
        &[NewEvent::new("many", "2"), NewEvent::new("many", "3")],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(
        pgq_core::current_event_table(&writer, &queue)
            .await
            .unwrap()
            .starts_with("pgq.event_")
    );
    // ...but not admin work, and the error names the role to grant.
    let e = pgq_core::create_queue(&writer, &q("nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(matches!(
        e,
        pgq_core::Error::PermissionDenied {
            role: PgqRole::Admin,
            ..
        }
    ));
    assert!(e.to_string().contains("pgq_admin"), "{e}");
    let e = pgq_core::copy_events(
        &mut writer.acquire().await.unwrap(),
        &queue,
        futures_util::stream::iter([Ok::<_, std::io::Error>(NewEvent::new("t", "d"))]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("pgq_admin"), "{e}");
    let e = pgq_core::insert_events(
        &writer,
        &queue,
        &[NewEvent::new("t", "d").time(chrono::Utc::now())],
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Admin (no superuser): COPY and ticking.
    let mut tx = admin_only.begin().await.unwrap();
    pgq_core::copy_events(
        &mut tx,
        &queue,
        futures_util::stream::iter([Ok::<_, std::io::Error>(NewEvent::new("copied", "4"))]),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Reader: register, stream, retry, finish.
    let cn = c("reader");
    pgq_core::register_consumer(&reader, &queue, &cn)
        .await
        .unwrap();
    tick(&admin_only, &queue).await;
    let b = pgq_core::next_batch(&reader, &queue, &cn)
        .await
        .unwrap()
        .expect("batch");
    let mut conn = reader.acquire().await.unwrap();
    let evs: Vec<_> = pgq_core::stream_batch_events(&mut conn, b, &Default::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(evs.len(), 4);
    pgq_core::event_retry(
        &mut *conn,
        b,
        evs[0].id(),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    pgq_core::finish_batch(&mut *conn, b).await.unwrap();
    let e = pgq_core::insert_event(&reader, &queue, "t", "d")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("pgq_writer"), "{e}");
    let e = pgq_core::ticker(&reader).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}
