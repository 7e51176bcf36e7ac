//! The test kit itself: the shared cluster, fresh databases, and a private cluster's faults.

use pgq_testkit::{Cluster, TestDb};
use sqlx::Connection as _;

async fn select_one(url: &str) -> i32 {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    one
}

#[tokio::test]
async fn shared_cluster_answers() {
    let cluster = Cluster::shared();
    assert_eq!(select_one(&cluster.url("postgres")).await, 1);
    assert!(cluster.port() > 0);
}

#[tokio::test]
async fn test_db_has_the_schema() {
    let db = TestDb::new().await;
    let version: String = sqlx::query_scalar("select pgq.version()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(version.starts_with('3'), "pgq.version() = {version}");
    let current: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(current, db.name());
    assert_eq!(select_one(&db.url()).await, 1);
}

#[tokio::test]
async fn test_dbs_are_distinct() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    sqlx::query("create table only_in_a (x int)")
        .execute(a.pool())
        .await
        .unwrap();
    let in_b: bool =
        sqlx::query_scalar("select exists (select 1 from pg_class where relname = 'only_in_a')")
            .fetch_one(b.pool())
            .await
            .unwrap();
    assert!(!in_b);
}

#[tokio::test]
async fn database_without_schema_is_empty() {
    let db = TestDb::new_without_schema().await;
    let has_pgq: bool =
        sqlx::query_scalar("select exists (select 1 from pg_namespace where nspname = 'pgq')")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(!has_pgq);
}

#[tokio::test]
async fn url_as_connects_as_that_role() {
    let db = TestDb::new().await;
    let role = format!("r_{}", db.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create role {role} login password 'p@ss word' in role pgq_reader"
    )))
    .execute(db.pool())
    .await
    .unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url_as(&role, Some("p@ss word")))
        .await
        .unwrap();
    let user: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, role);
    conn.close().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop role {role}")))
        .execute(db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn private_cluster_survives_stop_and_kill() {
    let cluster = Cluster::start_private().expect("start a private cluster");
    let data_dir = cluster
        .data_dir()
        .expect("a private cluster has a data dir")
        .to_owned();
    assert!(data_dir.join("PG_VERSION").is_file());
    let url = cluster.url("postgres");
    assert_eq!(select_one(&url).await, 1);

    // A database with the schema on it, whose data must survive the crashes.
    let db = TestDb::new_on(&cluster).await;
    sqlx::query("select pgq.create_queue('q')")
        .execute(db.pool())
        .await
        .unwrap();
    db.pool().close().await;

    cluster.stop_immediate().unwrap();
    assert!(sqlx::PgConnection::connect(&url).await.is_err());
    cluster.start().unwrap();
    assert_eq!(select_one(&url).await, 1);

    cluster.kill().unwrap();
    assert!(sqlx::PgConnection::connect(&url).await.is_err());
    cluster.start().unwrap();
    assert_eq!(select_one(&url).await, 1);

    cluster.stop_fast().unwrap();
    cluster.start().unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let queues: i64 =
        sqlx::query_scalar("select count(*) from pgq.get_queue_info() where queue_name = 'q'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(queues, 1);
    conn.close().await.unwrap();

    drop(db);
    drop(cluster);
    assert!(
        !data_dir.exists(),
        "dropping the cluster removes its directory"
    );
}

#[tokio::test]
async fn standby_streams_and_takes_over_when_promoted() {
    let primary = Cluster::start_private().expect("start a private cluster");
    let db = TestDb::new_on(&primary).await;
    let standby = primary.start_standby().expect("start a standby");
    assert_ne!(standby.port(), primary.port());
    let standby_dir = standby.data_dir().unwrap().to_owned();
    sqlx::query("select pgq.create_queue('sq')")
        .execute(db.pool())
        .await
        .unwrap();
    standby.wait_for_replay(&primary).await.unwrap();
    let standby_url = standby.url(db.name());
    let mut conn = sqlx::PgConnection::connect(&standby_url).await.unwrap();
    let (recovery, queues): (bool, i64) = sqlx::query_as(
        "select pg_is_in_recovery(), \
                (select count(*) from pgq.get_queue_info() where queue_name = 'sq')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(recovery, "a standby is in recovery");
    assert_eq!(queues, 1, "the queue made on the primary was replayed");
    conn.close().await.unwrap();

    db.pool().close().await;
    primary.stop_immediate().unwrap();
    standby.promote().unwrap();
    let mut conn = sqlx::PgConnection::connect(&standby_url).await.unwrap();
    let recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!recovery, "promoted");
    sqlx::query("select pgq.create_queue('after')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    drop(standby);
    assert!(!standby_dir.exists(), "dropping the standby removes it");
}
