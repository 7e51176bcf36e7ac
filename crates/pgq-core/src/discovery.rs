//! Discovery: the databases of a server, and which pgq each one has.
//!
//! Roles: nothing here needs a pgq role.

use sqlx::PgExecutor;

use crate::error::{Op, Result, ResultExt};

const DISCOVER: Op = Op::public("discover_databases");

/// Names of the databases that accept connections and are not templates (what a ticker running
/// discovery looks at), in name order.
///
/// Needs no pgq role.
pub async fn list_databases<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"select datname::text as "datname!" from pg_database
            where not datistemplate and datallowconn
            order by datname"#
    )
    .fetch_all(ex)
    .await
    .op(DISCOVER)
}

/// The pgq version installed in the current database: the `pgq` extension's version, or
/// `pgq.version()` when a `pgq` schema exists without the extension; `None` when there is no pgq.
///
/// Needs no pgq role.
pub async fn pgq_presence<'e>(ex: impl PgExecutor<'e>) -> Result<Option<String>> {
    sqlx::query_scalar!(
        r#"select coalesce((select extversion::text from pg_extension where extname = 'pgq'),
                           -- no extension: pgq.version() of a pgq schema (the SQL backend), run
                           -- only when it exists
                           case when to_regprocedure('pgq.version()') is not null
                                then (xpath('/row/v/text()',
                                            query_to_xml('select pgq.version() as v', false, true, '')))[1]::text
                           end,
                           case when to_regnamespace('pgq') is not null then 'unknown' end)
              as version"#
    )
    .fetch_one(ex)
    .await
    .op(DISCOVER)
}

/// The installed pgq version (`pgq.version()`), e.g. `"3.5"`. Needs no pgq role.
pub async fn version<'e>(ex: impl PgExecutor<'e>) -> Result<String> {
    const OP: Op = Op::public("version");
    sqlx::query_scalar!(r#"select pgq.version() as "v!""#)
        .fetch_one(ex)
        .await
        .op(OP)
}
