//! Security: TLS to the server (sslmode=require and verify-full with a self-signed CA) for the
//! library's whole flow.

use pgq_core::sqlx::{self, PgPool};
use pgq_core::{ConsumerName, NewEvent, QueueName};
use pgq_testkit::{Cluster, TestDb};

fn tls_url(db: &TestDb, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/{}?{params}",
        db.cluster().port(),
        db.name()
    )
}

async fn uses_tls(pool: &PgPool) -> bool {
    sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_library_works_over_tls_and_verifies_the_server() {
    let cluster = Cluster::start_private().unwrap();
    let ca = cluster.enable_tls().unwrap();
    let db = TestDb::new_on(&cluster).await;

    let require = PgPool::connect(&tls_url(&db, "127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    assert!(uses_tls(&require).await);
    let verify = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let full = PgPool::connect(&tls_url(&db, "localhost", &verify))
        .await
        .unwrap();
    assert!(uses_tls(&full).await);

    // The whole flow over the verified connection.
    let (q, c) = (
        QueueName::new("tls").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    pgq_core::create_queue(&full, &q).await.unwrap();
    pgq_core::register_consumer(&full, &q, &c).await.unwrap();
    pgq_core::insert_events(&full, &q, &[NewEvent::new("t", "secret")])
        .await
        .unwrap();
    pgq_core::tick_now(&mut full.acquire().await.unwrap(), &q)
        .await
        .unwrap();
    let b = pgq_core::next_batch(&full, &q, &c).await.unwrap().unwrap();
    assert_eq!(
        pgq_core::get_batch_events(&full, b).await.unwrap()[0]
            .ev_data
            .as_deref(),
        Some("secret")
    );
    pgq_core::finish_batch(&full, b).await.unwrap();

    // verify-full refuses a certificate from another authority.
    let other = tempfile::tempdir().unwrap();
    let other_ca = pgq_testkit::make_ca(other.path(), "other").unwrap();
    let wrong = format!("sslmode=verify-full&sslrootcert={}", other_ca.display());
    let err = PgPool::connect(&tls_url(&db, "localhost", &wrong))
        .await
        .unwrap_err();
    assert!(
        matches!(err, sqlx::Error::Tls(_) | sqlx::Error::Io(_)),
        "{err}"
    );
}
