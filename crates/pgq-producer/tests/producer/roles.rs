//! Least privilege: pgq_writer is enough for single sends, batches and change capture; COPY and
//! explicit event times need pgq_admin; the error names the role to grant.

use chrono::Utc;
use pgq_core::PgqRole;
use pgq_producer::{ChangeCapture, Error, ErrorKind, NewEvent, Producer};
use pgq_testkit::TestDb;

use crate::common::{consume, role_pool, setup, sql};

fn needs(e: &Error, role: PgqRole) {
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::PermissionDenied),
        "{e}"
    );
    assert!(
        matches!(e, Error::PermissionDenied { role: r, .. } if *r == role),
        "{e:?}"
    );
    assert!(e.to_string().contains(role.as_str()), "{e}");
}

#[tokio::test]
async fn writer_sends_and_batches_admin_copies() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "roles").await;
    let writer = role_pool(&db, "w", "pgq_writer").await;
    let admin = role_pool(&db, "a", "pgq_admin").await;
    let reader = role_pool(&db, "r", "pgq_reader").await;
    let p = Producer::new(q.clone());
    let multi_chunk = Producer::new(q.clone()).with_batch_limits(2, usize::MAX);

    let mut tx = writer.begin().await.unwrap();
    p.send(&mut *tx, &NewEvent::new("w", "1").extra1("x"))
        .await
        .unwrap();
    p.send_json(&mut *tx, "w", &[1, 2]).await.unwrap();
    p.send_batch(
        &mut *tx,
        &[NewEvent::new("w", "3"), NewEvent::new("w", "4")],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let five: Vec<NewEvent> = (5..10).map(|i| NewEvent::new("w", i.to_string())).collect();
    multi_chunk.send_batch(&writer, &five).await.unwrap();

    // COPY and explicit times need pgq_admin, and say so.
    let e = p
        .copy_iter(
            &mut writer.acquire().await.unwrap(),
            [NewEvent::new("w", "x")],
        )
        .await
        .unwrap_err();
    needs(&e, PgqRole::Admin);
    assert!(
        e.to_string().contains("send_batch works with pgq_writer"),
        "{e}"
    );
    let timed = NewEvent::new("w", "x").time(Utc::now());
    needs(&p.send(&writer, &timed).await.unwrap_err(), PgqRole::Admin);
    needs(
        &p.send_batch(&writer, std::slice::from_ref(&timed))
            .await
            .unwrap_err(),
        PgqRole::Admin,
    );
    // A reader cannot produce.
    needs(
        &p.send(&reader, &NewEvent::new("r", "x")).await.unwrap_err(),
        PgqRole::Writer,
    );
    needs(
        &p.send_batch(&reader, &[NewEvent::new("r", "x")])
            .await
            .unwrap_err(),
        PgqRole::Writer,
    );

    // pgq_admin (not a superuser) copies, with explicit times too.
    let mut tx = admin.begin().await.unwrap();
    p.copy_iter(&mut tx, [NewEvent::new("a", "10"), timed.clone()])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let got = consume(pool, &q).await;
    let data: Vec<&str> = got.iter().filter_map(|e| e.ev_data.as_deref()).collect();
    assert_eq!(
        data,
        ["1", "[1,2]", "3", "4", "5", "6", "7", "8", "9", "10", "x"]
    );
}

#[tokio::test]
async fn change_capture_with_pgq_writer_on_an_owned_table() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "cdc_roles").await;
    let writer = role_pool(&db, "w", "pgq_writer").await;
    let other = role_pool(&db, "o", "pgq_writer").await;
    let writer_role = format!("{}_w", db.name());
    sql(
        pool,
        &format!(
            "create table owned (id int primary key, v text); \
             alter table owned owner to \"{writer_role}\"; \
             create table not_owned (id int primary key)"
        ),
    )
    .await;
    let mut conn = writer.acquire().await.unwrap();
    ChangeCapture::logutriga(q.clone(), "owned")
        .attach(&mut conn)
        .await
        .unwrap();
    sql(&writer, "insert into owned values (1, 'a')").await;
    let e = ChangeCapture::logutriga(q.clone(), "not_owned")
        .attach(&mut conn)
        .await
        .unwrap_err();
    needs(&e, PgqRole::Writer);
    assert!(e.to_string().contains("ownership of the table"), "{e}");
    // Another role cannot detach it.
    let e = ChangeCapture::logutriga(q.clone(), "owned")
        .detach(&mut other.acquire().await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::PermissionDenied),
        "{e}"
    );
    drop(conn);
    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ev_data.as_deref(), Some("id=1&v=a"));
}
