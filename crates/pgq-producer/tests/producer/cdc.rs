//! Change capture: the exact events pgq's triggers produce, and every option.

use pgq_core::sqlx::PgPool;
use pgq_core::{QueueName, TriggerEvents, TriggerFunction, TriggerTiming};
use pgq_producer::{ChangeCapture, ErrorKind, EventField};
use pgq_testkit::TestDb;

use crate::common::{consume, setup, sql};

const TABLE: &str = "create schema shop; \
    create table shop.orders (id int primary key, name text, qty int, note text)";
const CHANGES: &str = "insert into shop.orders values (1, 'a b&c', 2, null); \
    update shop.orders set qty = 3 where id = 1; \
    delete from shop.orders where id = 1; \
    truncate shop.orders";

/// (ev_type, ev_data, ev_extra1, ev_extra2) of each event, in order.
type Row = (String, String, String, Option<String>);

async fn events(pool: &PgPool, q: &QueueName) -> Vec<Row> {
    consume(pool, q)
        .await
        .into_iter()
        .map(|e| {
            (
                e.ev_type.unwrap_or_default(),
                e.ev_data.unwrap_or_default(),
                e.ev_extra1.unwrap_or_default(),
                e.ev_extra2,
            )
        })
        .collect()
}

async fn capture_all(function: TriggerFunction) -> Vec<Row> {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "cdc").await;
    sql(pool, TABLE).await;
    let mut conn = pool.acquire().await.unwrap();
    let defs = ChangeCapture::new(function, q.clone(), "shop.orders")
        .attach(&mut conn)
        .await
        .unwrap();
    assert_eq!(defs.len(), 2);
    drop(conn);
    sql(pool, CHANGES).await;
    events(pool, &q).await
}

fn row(t: &str, d: &str, x2: Option<&str>) -> Row {
    (t.into(), d.into(), "shop.orders".into(), x2.map(Into::into))
}

#[tokio::test]
async fn logutriga_events_for_insert_update_delete_truncate() {
    assert_eq!(
        capture_all(TriggerFunction::Logutriga).await,
        [
            row("I:id", "id=1&name=a+b%26c&qty=2&note", None),
            row("U:id", "id=1&name=a+b%26c&qty=3&note", None),
            row("D:id", "id=1&name=a+b%26c&qty=3&note", None),
            row("R", "", None),
        ]
    );
}

#[tokio::test]
async fn jsontriga_events_for_insert_update_delete_truncate() {
    let meta = |op: &str| format!(r#"{{"op":"{op}","table":["shop","orders"],"pkey":["id"]}}"#);
    assert_eq!(
        capture_all(TriggerFunction::Jsontriga).await,
        [
            row(
                &meta("INSERT"),
                r#"{"id":1,"name":"a b&c","qty":2,"note":null}"#,
                None
            ),
            row(
                &meta("UPDATE"),
                r#"{"id":1,"name":"a b&c","qty":3,"note":null}"#,
                None
            ),
            row(
                &meta("DELETE"),
                r#"{"id":1,"name":"a b&c","qty":3,"note":null}"#,
                None
            ),
            row(&meta("TRUNCATE"), "{}", None),
        ]
    );
}

#[tokio::test]
async fn sqltriga_events_for_insert_update_delete_truncate() {
    assert_eq!(
        capture_all(TriggerFunction::Sqltriga).await,
        [
            row(
                "I",
                "(id,name,qty,note) values ('1','a b&c','2',null)",
                None
            ),
            row("U", "qty='3' where id='1'", None),
            row("D", "id='1'", None),
            row("R", "", None),
        ]
    );
}

/// A database with queue `cdc` and table `shop.orders`.
async fn fixture() -> (TestDb, QueueName) {
    let db = TestDb::new().await;
    let q = setup(db.pool(), "cdc").await;
    sql(db.pool(), TABLE).await;
    (db, q)
}

async fn attach(pool: &PgPool, c: ChangeCapture) {
    c.attach(&mut pool.acquire().await.unwrap()).await.unwrap();
}

#[tokio::test]
async fn ignore_backup_and_when() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    attach(
        pool,
        ChangeCapture::logutriga(q.clone(), "shop.orders")
            .ignore(["note"])
            .backup()
            .when("qty > 1"),
    )
    .await;
    sql(
        pool,
        "insert into shop.orders values (1, 'a', 1, 'n1'); \
         insert into shop.orders values (2, 'b', 5, 'n2'); \
         update shop.orders set note = 'only ignored' where id = 2; \
         update shop.orders set name = 'B' where id = 2",
    )
    .await;
    assert_eq!(
        events(pool, &q).await,
        [
            // id 1 has qty 1: filtered out by when=; the note is never in the data.
            row("I:id", "id=2&name=b&qty=5", None),
            // The note-only update made no event; the backup is the old row (without ignored
            // columns).
            row("U:id", "id=2&name=B&qty=5", Some("id=2&name=b&qty=5")),
        ]
    );
}

#[tokio::test]
async fn skip_writes_the_event_but_not_the_row() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    attach(
        pool,
        ChangeCapture::jsontriga(q.clone(), "shop.orders")
            .skip()
            .operations(true, false, false, false),
    )
    .await;
    sql(pool, "insert into shop.orders values (1, 'a', 1, null)").await;
    let n: i64 = pgq_core::sqlx::query_scalar("select count(*) from shop.orders")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "SKIP: the row itself is not written");
    let got = events(pool, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, r#"{"id":1,"name":"a","qty":1,"note":null}"#);
}

#[tokio::test]
async fn deny_refuses_every_change() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    sql(pool, "insert into shop.orders values (1, 'a', 1, null)").await;
    attach(
        pool,
        ChangeCapture::logutriga(q.clone(), "shop.orders").deny(),
    )
    .await;
    for change in [
        "insert into shop.orders values (2, 'b', 1, null)",
        "update shop.orders set qty = 2",
        "delete from shop.orders",
        "truncate shop.orders",
    ] {
        let e = pgq_core::sqlx::query(change)
            .execute(pool)
            .await
            .expect_err(change);
        assert!(
            e.to_string().contains("change not allowed"),
            "{change}: {e}"
        );
    }
    let n: i64 = pgq_core::sqlx::query_scalar("select count(*) from shop.orders")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(events(pool, &q).await.is_empty());
}

#[tokio::test]
async fn field_overrides_and_custom_pkey() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    sql(pool, "create table shop.nokey (a int, b text)").await;
    // No primary key: updates and deletes cannot be keyed unless pkey= is given.
    let e = ChangeCapture::logutriga(q.clone(), "shop.nokey")
        .attach(&mut pool.acquire().await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCapture, "{e}");
    assert!(e.to_string().contains("no primary key"), "{e}");
    // Inserts only need no key.
    attach(
        pool,
        ChangeCapture::logutriga(q.clone(), "shop.nokey")
            .name("nokey_inserts")
            .operations(true, false, false, false),
    )
    .await;
    attach(
        pool,
        ChangeCapture::logutriga(q.clone(), "shop.nokey")
            .pkey(["a"])
            .operations(false, true, false, false)
            .set(EventField::Type, "'nokey:' || b")
            .set(EventField::Extra1, "null")
            .set(EventField::Extra3, "a * 10"),
    )
    .await;
    sql(
        pool,
        "insert into shop.nokey values (1, 'x'); update shop.nokey set b = 'y'",
    )
    .await;
    let got = consume(pool, &q).await;
    let rows: Vec<_> = got
        .iter()
        .map(|e| {
            (
                e.ev_type.as_deref(),
                e.ev_data.as_deref(),
                e.ev_extra1.as_deref(),
                e.ev_extra3.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Some("I:"), Some("a=1&b=x"), Some("shop.nokey"), None),
            (Some("nokey:y"), Some("a=1&b=y"), None, Some("10")),
        ]
    );
}

#[tokio::test]
async fn attach_is_idempotent_and_detach_stops_capture() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    let capture = ChangeCapture::sqltriga(q.clone(), "shop.orders");
    attach(pool, capture.clone()).await;
    attach(pool, capture.clone()).await;
    let found = pgq_producer::captures(pool, "shop.orders").await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].name, "pgq_cdc_cdc");
    assert_eq!(found[0].function, TriggerFunction::Sqltriga);
    assert_eq!(found[0].timing, TriggerTiming::After);
    assert_eq!(
        found[0].events,
        TriggerEvents::Rows {
            insert: true,
            update: true,
            delete: true
        }
    );
    assert_eq!(found[0].args, ["cdc"]);
    assert_eq!(found[0].queue(), Some("cdc"));
    assert_eq!(found[1].name, "pgq_cdc_cdc_truncate");
    assert_eq!(found[1].events, TriggerEvents::Truncate);

    // Re-attached without TRUNCATE: the old TRUNCATE trigger goes.
    attach(pool, capture.clone().operations(true, true, true, false)).await;
    assert_eq!(
        pgq_producer::captures(pool, "shop.orders")
            .await
            .unwrap()
            .len(),
        1
    );
    sql(
        pool,
        "insert into shop.orders values (1, 'a', 1, null); truncate shop.orders",
    )
    .await;
    assert_eq!(events(pool, &q).await.len(), 1);

    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(capture.detach(&mut conn).await.unwrap(), 1);
    assert_eq!(capture.detach(&mut conn).await.unwrap(), 0);
    drop(conn);
    sql(pool, "insert into shop.orders values (2, 'b', 1, null)").await;
    assert!(events(pool, &q).await.is_empty());
    assert!(
        pgq_producer::captures(pool, "shop.orders")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn detach_queue_drops_only_that_queues_pgq_triggers() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    let other = setup(pool, "other").await;
    attach(pool, ChangeCapture::logutriga(q.clone(), "shop.orders")).await;
    attach(pool, ChangeCapture::jsontriga(other.clone(), "shop.orders")).await;
    // A trigger of the application's own is never touched.
    sql(
        pool,
        "create function shop.noop() returns trigger language plpgsql as 'begin return new; end'; \
         create trigger app_trigger before insert on shop.orders for each row execute function shop.noop()",
    )
    .await;
    let mut conn = pool.acquire().await.unwrap();
    let dropped = pgq_producer::detach_queue(&mut conn, "shop.orders", Some(&q))
        .await
        .unwrap();
    assert_eq!(dropped.len(), 2);
    assert!(dropped.iter().all(|t| t.queue() == Some("cdc")));
    let left = pgq_producer::captures(&mut *conn, "shop.orders")
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
    assert!(
        left.iter()
            .all(|t| t.function == TriggerFunction::Jsontriga)
    );
    let dropped = pgq_producer::detach_queue(&mut conn, "shop.orders", None)
        .await
        .unwrap();
    assert_eq!(dropped.len(), 2);
    let n: i64 = pgq_core::sqlx::query_scalar(
        "select count(*) from pg_trigger where tgrelid = 'shop.orders'::regclass and not tgisinternal",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(n, 1, "the application's trigger stays");
}

#[tokio::test]
async fn attach_refuses_a_missing_queue_or_table_and_bad_options() {
    let (db, q) = fixture().await;
    let pool = db.pool();
    let mut conn = pool.acquire().await.unwrap();
    let e = ChangeCapture::logutriga(QueueName::new("nope").unwrap(), "shop.orders")
        .attach(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Core(pgq_core::ErrorKind::QueueNotFound),
        "{e}"
    );
    let e = ChangeCapture::logutriga(q.clone(), "shop.missing")
        .attach(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCapture, "{e}");
    assert!(e.to_string().contains("no such table"), "{e}");
    let e = ChangeCapture::logutriga(q.clone(), "shop.orders")
        .ignore(["a,b"])
        .attach(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCapture, "{e}");
    // A bad when= expression is refused by the database when the trigger first fires, not at
    // attach time: the table's writes then fail, which is why attach checks what it can.
    drop(conn);
    assert!(
        pgq_producer::captures(pool, "shop.orders")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn quoted_identifiers_and_option_text() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "it's \"quoted\"").await;
    sql(
        pool,
        r#"create schema "My Schema"; create table "My Schema"."Odd ""Table""" ("Id" int primary key, "a,b" text, v text)"#,
    )
    .await;
    attach(
        pool,
        ChangeCapture::logutriga(q.clone(), r#"My Schema.Odd "Table""#)
            .name("trigger 'with' \"quotes\"")
            .when("v <> 'it''s'")
            .set(EventField::Extra2, "'x''y'"),
    )
    .await;
    sql(
        pool,
        r#"insert into "My Schema"."Odd ""Table""" values (1, 'c', 'keep'), (2, 'd', 'it''s')"#,
    )
    .await;
    let got = consume(pool, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ev_type.as_deref(), Some("I:Id"));
    assert_eq!(got[0].ev_data.as_deref(), Some("Id=1&a%2cb=c&v=keep"));
    assert_eq!(
        got[0].ev_extra1.as_deref(),
        Some(r#"My Schema.Odd "Table""#)
    );
    assert_eq!(got[0].ev_extra2.as_deref(), Some("x'y"));
}
