//! Change-capture options with `jsontriga` and `sqltriga`: `backup`, `pkey`, `ignore` and
//! `when` reach pgq's triggers and shape the events they produce (logutriga's are in `cdc.rs`).

use pgq_core::QueueName;
use pgq_core::sqlx::PgPool;
use pgq_producer::ChangeCapture;
use pgq_testkit::TestDb;

use crate::common::{consume, setup, sql};

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

fn row(t: &str, d: &str, table: &str, x2: Option<&str>) -> Row {
    (t.into(), d.into(), table.into(), x2.map(Into::into))
}

/// A database with queue `cdc` and `table_sql`'s tables; `capture` attached.
async fn captured(
    table_sql: &str,
    capture: impl FnOnce(QueueName) -> ChangeCapture,
) -> (TestDb, QueueName) {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = setup(pool, "cdc").await;
    sql(pool, table_sql).await;
    capture(q.clone())
        .attach(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    (db, q)
}

#[tokio::test]
async fn jsontriga_backup_ignore_and_when() {
    let (db, q) = captured(
        "create schema shop; \
         create table shop.orders (id int primary key, name text, qty int, note text)",
        |q| {
            ChangeCapture::jsontriga(q, "shop.orders")
                .ignore(["note"])
                .backup()
                .when("qty > 1")
        },
    )
    .await;
    let pool = db.pool();
    sql(
        pool,
        "insert into shop.orders values (1, 'a', 1, 'n1'), (2, 'b', 5, 'n2'); \
         update shop.orders set note = 'only ignored' where id = 2; \
         update shop.orders set name = 'B' where id = 2; \
         delete from shop.orders where id = 2",
    )
    .await;
    let meta = |op: &str| format!(r#"{{"op":"{op}","table":["shop","orders"],"pkey":["id"]}}"#);
    let t = "shop.orders";
    assert_eq!(
        events(pool, &q).await,
        [
            // id 1 has qty 1 (when=); the note is never in the data (ignore=).
            row(&meta("INSERT"), r#"{"id":2,"name":"b","qty":5}"#, t, None),
            // The note-only update made no event; backup: the old row, as JSON, in extra2.
            row(
                &meta("UPDATE"),
                r#"{"id":2,"name":"B","qty":5}"#,
                t,
                Some(r#"{"id":2,"name":"b","qty":5}"#)
            ),
            row(&meta("DELETE"), r#"{"id":2,"name":"B","qty":5}"#, t, None),
        ]
    );
}

#[tokio::test]
async fn jsontriga_pkey_names_the_key_of_a_table_without_one() {
    let (db, q) = captured("create table j2 (a int, b text, c int)", |q| {
        ChangeCapture::jsontriga(q, "j2").pkey(["a"]).backup()
    })
    .await;
    let pool = db.pool();
    sql(
        pool,
        "insert into j2 values (1, 'x', 2); update j2 set b = 'y'; delete from j2",
    )
    .await;
    let meta = |op: &str| format!(r#"{{"op":"{op}","table":["public","j2"],"pkey":["a"]}}"#);
    let t = "public.j2";
    assert_eq!(
        events(pool, &q).await,
        [
            row(&meta("INSERT"), r#"{"a":1,"b":"x","c":2}"#, t, None),
            row(
                &meta("UPDATE"),
                r#"{"a":1,"b":"y","c":2}"#,
                t,
                Some(r#"{"a":1,"b":"x","c":2}"#)
            ),
            row(&meta("DELETE"), r#"{"a":1,"b":"y","c":2}"#, t, None),
        ]
    );
}

#[tokio::test]
async fn sqltriga_pkey_ignore_backup_and_when() {
    let (db, q) = captured("create table k2 (a int, b text, c int, d int)", |q| {
        ChangeCapture::sqltriga(q, "k2")
            .pkey(["a", "d"])
            .ignore(["c"])
            .backup()
            .when("a > 0")
    })
    .await;
    let pool = db.pool();
    sql(
        pool,
        "insert into k2 values (0, 'z', 1, 7), (1, 'x', 2, 7); \
         update k2 set c = 9 where a = 1; \
         update k2 set b = 'y' where a = 1; \
         delete from k2 where a = 1",
    )
    .await;
    let t = "public.k2";
    assert_eq!(
        events(pool, &q).await,
        [
            // a = 0 is filtered out (when=); c is never in the SQL (ignore=).
            row("I", "(a,b,d) values ('1','x','7')", t, None),
            // The c-only update made no event; the key is (a, d) (pkey=); the old row in extra2.
            row("U", "b='y' where a='1' and d='7'", t, Some("a=1&b=x&d=7")),
            row("D", "a='1' and d='7'", t, None),
        ]
    );
}
