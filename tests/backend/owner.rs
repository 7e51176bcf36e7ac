//! The managed-PostgreSQL situation: a role with only LOGIN and CREATEROLE that owns its
//! database installs pgq (the SQL backend, chosen because it may not create the extension) and
//! then produces, ticks, maintains and consumes as itself; roles it creates produce and consume
//! with the least pgq role.

use futures_util::TryStreamExt;
use pgq_core::sqlx::{self, AssertSqlSafe, Connection, PgConnection, PgPool};
use pgq_core::{Backend, NewEvent};
use pgq_testkit::{Cluster, c, q};

async fn admin(cluster: &Cluster, sql: &str) {
    let mut conn = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.unwrap();
}

async fn pool_as(cluster: &Cluster, role: &str, db: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&cluster.url_as(role, None, db))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_database_owner_without_superuser_installs_and_runs_everything() {
    // A cluster of its own: the pgq roles do not exist yet, so the owner creates them.
    let cluster = Cluster::start_private().unwrap();
    admin(&cluster, "create role app_owner login createrole").await;
    admin(&cluster, "create database app owner app_owner").await;
    let owner = pool_as(&cluster, "app_owner", "app").await;

    let report = pgq_core::install(&owner).await.unwrap();
    assert_eq!(report.backend, Backend::Sql, "{report:?}");
    assert!(
        report
            .backend_note
            .contains("may not create the pgq extension"),
        "{report:?}"
    );
    assert_eq!(report.applied, pgq_core::embedded_migrations());
    let roles: Vec<String> = sqlx::query_scalar(
        "select rolname::text from pg_roles where rolname like 'pgq\\_%' order by 1",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(roles, ["pgq_admin", "pgq_reader", "pgq_writer"]);
    let superuser: bool =
        sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert!(!superuser);

    // Produce, tick, maintain and consume as the owner.
    let (qn, cn) = (q("orders"), c("billing"));
    assert!(pgq_core::create_queue(&owner, &qn).await.unwrap());
    assert!(pgq_core::register_consumer(&owner, &qn, &cn).await.unwrap());
    pgq_core::insert_event(&owner, &qn, "one", "1")
        .await
        .unwrap();
    let evs: Vec<NewEvent> = (2..=4)
        .map(|i| NewEvent::new("many", i.to_string()))
        .collect();
    pgq_core::insert_events(&owner, &qn, &evs).await.unwrap();
    let mut conn = owner.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, &qn).await.unwrap().unwrap();
    let batch = pgq_core::next_batch(&mut *conn, &qn, &cn)
        .await
        .unwrap()
        .unwrap();
    let events: Vec<_> = pgq_core::stream_batch_events(&mut conn, batch, &Default::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let data: Vec<_> = events.iter().filter_map(|e| e.ev_data.clone()).collect();
    assert_eq!(data, ["1", "2", "3", "4"]);
    pgq_core::event_retry(&mut *conn, batch, events[0].id(), std::time::Duration::ZERO)
        .await
        .unwrap();
    pgq_core::finish_batch(&mut *conn, batch).await.unwrap();
    for op in pgq_core::maint_operations(&mut *conn).await.unwrap() {
        pgq_core::run_maint_operation(&mut conn, &op).await.unwrap();
    }
    pgq_core::maint_retry_events_all(&mut conn).await.unwrap();
    pgq_core::tick_now(&mut conn, &qn).await.unwrap().unwrap();
    let batch = pgq_core::next_batch(&mut *conn, &qn, &cn)
        .await
        .unwrap()
        .unwrap();
    let again = pgq_core::get_batch_events(&mut *conn, batch).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].ev_retry, again[0].ev_data.as_deref()),
        (Some(1), Some("1"))
    );
    pgq_core::finish_batch(&mut *conn, batch).await.unwrap();
    drop(conn);

    // Least-privilege roles the owner creates: a writer produces, a reader consumes.
    sqlx::raw_sql(
        "create role app_writer login in role pgq_writer;
         create role app_reader login in role pgq_reader",
    )
    .execute(&owner)
    .await
    .unwrap();
    let writer = pool_as(&cluster, "app_writer", "app").await;
    let reader = pool_as(&cluster, "app_reader", "app").await;
    pgq_core::insert_event(&writer, &qn, "w", "from the writer")
        .await
        .unwrap();
    pgq_core::insert_events(&writer, &qn, &[NewEvent::new("w", "set-based")])
        .await
        .unwrap();
    let consumer = c("reader");
    pgq_core::register_consumer(&reader, &qn, &consumer)
        .await
        .unwrap();
    pgq_core::insert_event(&writer, &qn, "w", "after registering")
        .await
        .unwrap();
    let mut conn = owner.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, &qn).await.unwrap().unwrap();
    drop(conn);
    let mut conn = reader.acquire().await.unwrap();
    let b = pgq_core::next_batch(&mut *conn, &qn, &consumer)
        .await
        .unwrap()
        .unwrap();
    // Registered at the newest tick: the events after it, committed before or after.
    let got = pgq_core::get_batch_events(&mut *conn, b).await.unwrap();
    let data: Vec<_> = got.iter().filter_map(|e| e.ev_data.as_deref()).collect();
    assert_eq!(data, ["from the writer", "set-based", "after registering"]);
    pgq_core::finish_batch(&mut *conn, b).await.unwrap();
    drop(conn);

    // Cooperative consumption as the owner.
    let (group, m1) = (c("workers"), c("m1"));
    pgq_core::coop_register_member(&owner, &qn, &group, &m1)
        .await
        .unwrap();
    pgq_core::insert_event(&writer, &qn, "w", "for the group")
        .await
        .unwrap();
    let mut conn = owner.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, &qn).await.unwrap().unwrap();
    let b = pgq_core::coop_next_batch(&mut *conn, &qn, &group, &m1, Default::default(), None)
        .await
        .unwrap()
        .unwrap();
    let got = pgq_core::get_batch_events(&mut *conn, b).await.unwrap();
    assert_eq!(got.len(), 1);
    pgq_core::coop_finish_batch(&mut *conn, b).await.unwrap();
    drop(conn);

    // Installing again as the owner changes nothing.
    let again = pgq_core::install(&owner).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    for p in [owner, writer, reader] {
        p.close().await;
    }
}
