//! Choosing, installing, checking and upgrading the backend.

use pgq_core::sqlx::{self, AssertSqlSafe};
use pgq_core::{Backend, ErrorKind, InstallOptions};
use pgq_testkit::TestDb;

fn sql() -> InstallOptions {
    InstallOptions::new().backend(Some(Backend::Sql))
}

fn ext() -> InstallOptions {
    InstallOptions::new().backend(Some(Backend::Extension))
}

#[tokio::test]
async fn auto_install_uses_the_extension_when_the_role_may_create_it() {
    let db = TestDb::new_without_schema().await;
    let r = pgq_core::install(db.pool()).await.unwrap();
    assert_eq!(r.backend, Backend::Extension, "{r:?}");
    assert!(
        r.backend_note.contains("created the pgq extension"),
        "{r:?}"
    );
    assert_eq!(r.applied, pgq_core::embedded_migrations());
    let check = pgq_core::check(db.pool()).await.unwrap();
    assert_eq!(check.backend, Some(Backend::Extension));
    // A database on the extension refuses the SQL backend, whoever asks.
    let e = pgq_core::install_with(db.pool(), &sql()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BackendMismatch, "{e}");
    assert!(e.to_string().contains("never switched"), "{e}");
}

#[tokio::test]
async fn the_sql_backend_installs_with_our_migrations_and_is_idempotent() {
    let db = TestDb::new_without_schema().await;
    let pool = db.pool();
    let r = pgq_core::install_with(pool, &sql()).await.unwrap();
    assert_eq!(r.backend, Backend::Sql, "{r:?}");
    assert_eq!(r.pgq_version, pgq_core::SQL_BACKEND_VERSION);
    assert_eq!(
        r.applied,
        pgq_core::embedded_migrations(),
        "every migration counts as applied, the first (CREATE EXTENSION) recorded: {r:?}"
    );
    let extension: Option<String> =
        sqlx::query_scalar("select extversion from pg_extension where extname = 'pgq'")
            .fetch_optional(pool)
            .await
            .unwrap();
    assert_eq!(extension, None, "no extension was created");
    let check = pgq_core::check(pool).await.unwrap();
    assert_eq!(check.backend, Some(Backend::Sql));
    assert_eq!(
        check.pgq_version.as_deref(),
        Some(pgq_core::SQL_BACKEND_VERSION)
    );
    assert_eq!(check.schema_version, Some(check.latest_schema_version));
    assert!(
        matches!(check.coop, Some(pgq_core::CoopFlavor::PgqRs { .. })),
        "{:?}",
        check.coop
    );

    // Again, automatically chosen (the database is on the SQL backend), and concurrently.
    let again = pgq_core::install(pool).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.backend, Backend::Sql);
    let forced = sql();
    let (a, b) = tokio::join!(
        pgq_core::install(pool),
        pgq_core::install_with(pool, &forced)
    );
    a.unwrap();
    b.unwrap();
    // Never switched to the extension.
    let e = pgq_core::install_with(pool, &ext()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BackendMismatch, "{e}");
    let public: i64 = sqlx::query_scalar(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'public'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(public, 0, "nothing created in public");
}

#[tokio::test]
async fn an_older_sql_backend_is_upgraded_in_place() {
    let db = TestDb::new_with_backend(Backend::Sql).await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &pgq_testkit::q("kept"))
        .await
        .unwrap();
    // What a database installed by an older build looks like: an older revision, an older
    // function.
    sqlx::raw_sql(
        "comment on schema pgq is 'pgq_rs SQL backend revision 0: older';
         create or replace function pgq.version() returns text language sql
             as $$ select '3.5-pgq_rs.sql.0'::text $$;
         drop function pgq_rs.sql_backend_insert(int4, int4, bigint, timestamptz, int4, int4,
                                                 text, text, text, text, text, text)",
    )
    .execute(pool)
    .await
    .unwrap();
    let r = pgq_core::install(pool).await.unwrap();
    assert_eq!(r.backend, Backend::Sql);
    assert!(r.backend_note.contains("upgraded from revision 0"), "{r:?}");
    assert_eq!(r.pgq_version, pgq_core::SQL_BACKEND_VERSION);
    assert!(
        pgq_core::queue_exists(pool, &pgq_testkit::q("kept"))
            .await
            .unwrap(),
        "data is kept"
    );
    let inserter: String =
        sqlx::query_scalar("select prosrc from pg_proc where proname = 'sql_backend_insert'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        inserter.contains("pgq.event_1_0"),
        "the upgrade generates the inserter for the queue there is: {inserter}"
    );
    let again = pgq_core::install(pool).await.unwrap();
    assert!(
        again.backend_note.contains("installed (revision"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_pgq_schema_of_unknown_origin_is_refused() {
    let db = TestDb::new_without_schema().await;
    sqlx::raw_sql(AssertSqlSafe("create schema pgq"))
        .execute(db.pool())
        .await
        .unwrap();
    for options in [InstallOptions::new(), sql()] {
        let e = pgq_core::install_with(db.pool(), &options)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BackendUnavailable, "{e}");
        assert!(e.to_string().contains("neither"), "{e}");
    }
}

/// What a ticker and `pgq status` read to tell whether a database has pgq, and which: the SQL
/// backend's `pgq.version()` (it said "unknown" before), the extension's version, or nothing.
#[tokio::test]
async fn pgq_presence_names_the_version_on_either_backend() {
    let none = TestDb::new_without_schema().await;
    assert_eq!(pgq_core::pgq_presence(none.pool()).await.unwrap(), None);
    pgq_core::install_with(none.pool(), &sql()).await.unwrap();
    assert_eq!(
        pgq_core::pgq_presence(none.pool())
            .await
            .unwrap()
            .as_deref(),
        Some(pgq_core::SQL_BACKEND_VERSION)
    );
    let ext_db = TestDb::new_without_schema().await;
    pgq_core::install_with(ext_db.pool(), &ext()).await.unwrap();
    let v = pgq_core::pgq_presence(ext_db.pool())
        .await
        .unwrap()
        .unwrap();
    assert!(v.starts_with("3."), "{v}");
}
