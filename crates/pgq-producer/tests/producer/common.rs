use pgq_core::sqlx::{self, Executor, PgPool};
use pgq_core::{ConsumerName, Event, QueueName};
use pgq_testkit::TestDb;

pub(crate) use pgq_testkit::q;

/// Create `queue` with a consumer `c` on it.
pub(crate) async fn setup(pool: &PgPool, queue: &str) -> QueueName {
    let qn = q(queue);
    assert!(pgq_core::create_queue(pool, &qn).await.unwrap());
    let c = ConsumerName::new("c").unwrap();
    assert!(pgq_core::register_consumer(pool, &qn, &c).await.unwrap());
    qn
}

/// Tick, then read every open batch of consumer `c` to the end; returns all events by id.
pub(crate) async fn consume(pool: &PgPool, queue: &QueueName) -> Vec<Event> {
    let c = ConsumerName::new("c").unwrap();
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::tick_now(&mut conn, queue).await.unwrap();
    drop(conn);
    let mut all = Vec::new();
    while let Some(b) = pgq_core::next_batch(pool, queue, &c).await.unwrap() {
        all.extend(pgq_core::get_batch_events(pool, b).await.unwrap());
        pgq_core::finish_batch(pool, b).await.unwrap();
    }
    all.sort_by_key(|e| e.ev_id);
    all
}

/// A pool logging in as a new role (unique per database) that has been granted `granted`.
pub(crate) async fn role_pool(db: &TestDb, role: &str, granted: &str) -> PgPool {
    let name = db.create_role(role, granted, None).await;
    db.pool_as(&name).await
}

/// Run SQL as the superuser.
pub(crate) async fn sql(pool: &PgPool, sql: &str) {
    pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
