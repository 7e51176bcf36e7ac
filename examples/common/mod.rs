//! Shared by the examples: the database they run against.

use pgq::core::sqlx::{self, PgPool};

/// The database of an example: `DATABASE_URL` when set, else a fresh database on a private
/// PostgreSQL cluster started by `pgq-testkit` (kept alive as long as this value).
pub(crate) struct ExampleDb {
    /// A pool to the database.
    pub(crate) pool: PgPool,
    /// Its URL (for processes the example starts, such as the ticker).
    #[allow(dead_code, reason = "not every example starts another process")]
    pub(crate) url: String,
    _private: Option<pgq_testkit::TestDb>,
}

/// Connect to `DATABASE_URL`, or start a private cluster when it is not set.
pub(crate) async fn database() -> Result<ExampleDb, sqlx::Error> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            println!("using DATABASE_URL");
            Ok(ExampleDb {
                pool: PgPool::connect(&url).await?,
                url,
                _private: None,
            })
        }
        Err(_) => {
            println!(
                "starting a private PostgreSQL cluster (set DATABASE_URL to use your own) ..."
            );
            let db = pgq_testkit::TestDb::new_without_schema().await;
            println!(
                "  cluster on 127.0.0.1:{}, database {}",
                db.cluster().port(),
                db.name()
            );
            Ok(ExampleDb {
                pool: db.pool().clone(),
                url: db.url(),
                _private: Some(db),
            })
        }
    }
}
