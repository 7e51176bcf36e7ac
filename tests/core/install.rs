//! Schema install and check.

use pgq_testkit::TestDb;

#[tokio::test]
async fn install_is_idempotent_and_keeps_public_clean() {
    let db = TestDb::new_without_schema().await;
    let pool = db.pool();
    let before = pgq_core::check(pool).await.unwrap();
    assert_eq!(before.pgq_version, None);
    assert_eq!(before.schema_version, None);
    assert_eq!(before.ticker_alive, None);

    let r = pgq_core::install(pool).await.unwrap();
    assert!(r.pgq_version.starts_with("3."), "{r:?}");
    assert_eq!(r.applied, pgq_core::embedded_migrations());
    let again = pgq_core::install(pool).await.unwrap();
    assert!(
        again.applied.is_empty(),
        "second run applies nothing: {again:?}"
    );
    assert_eq!(again.schema_version, r.schema_version);

    // Concurrent installs are serialised.
    let (a, b) = tokio::join!(pgq_core::install(pool), pgq_core::install(pool));
    a.unwrap();
    b.unwrap();

    let public: i64 = pgq_core::sqlx::query_scalar(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(public, 0, "nothing created in public");

    let report = pgq_core::check(pool).await.unwrap();
    assert_eq!(report.pgq_version.as_deref(), Some(r.pgq_version.as_str()));
    assert_eq!(report.schema_version, Some(report.latest_schema_version));
    assert_eq!(report.ticker_alive, None, "no queues to judge by");
    assert_eq!(pgq_core::version(pool).await.unwrap(), r.pgq_version);
}

#[tokio::test]
async fn check_reports_tick_age_per_queue() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = crate::common::q("aged");
    pgq_core::create_queue(pool, &q).await.unwrap();
    let report = pgq_core::check(pool).await.unwrap();
    assert_eq!(report.queues.len(), 1);
    assert_eq!(report.queues[0].queue_name, "aged");
    assert!(report.queues[0].last_tick_time.is_some());
    assert_eq!(
        report.ticker_alive,
        Some(false),
        "the tick create_queue wrote is not a running ticker"
    );
    // A session holding pgq-ticker's lock is.
    let mut ticker = pool.acquire().await.unwrap();
    assert!(
        pgq_core::try_ticker_lock(&mut *ticker, pgq_core::TICKER_LOCK_KEY)
            .await
            .unwrap()
    );
    let report = pgq_core::check(pool).await.unwrap();
    assert_eq!(report.ticker_alive, Some(true));
    assert!(report.ticker.is_some());
    pgq_core::ticker_unlock(&mut *ticker, pgq_core::TICKER_LOCK_KEY)
        .await
        .unwrap();
    drop(ticker);
    // Aged ticks still have their age reported.
    pgq_core::sqlx::query("update pgq.tick set tick_time = tick_time - interval '1 hour'")
        .execute(pool)
        .await
        .unwrap();
    let report = pgq_core::check(pool).await.unwrap();
    assert_eq!(report.ticker_alive, Some(false));
    assert!(report.queues[0].age.unwrap() >= std::time::Duration::from_secs(3600));
}

/// A log sink for one test: everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `install()` at every start of a service does not log PostgreSQL's NOTICEs ("schema pgq_rs
/// already exists, skipping") at INFO, and leaves the session's `client_min_messages` as it was.
#[tokio::test(flavor = "current_thread")]
async fn install_is_quiet_when_everything_is_installed() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = pool.acquire().await.unwrap();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    pgq_core::install(&mut *conn).await.unwrap();
    drop(guard);
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.contains("already exists"), "{logged}");
    let level: String = pgq_core::sqlx::query_scalar("show client_min_messages")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(level, "notice", "the session's setting is restored");
}
