//! The two implementations of the pgq schema `install()` can put in a database: the pgq C
//! extension, or this project's own SQL implementation of the same API (for managed PostgreSQL,
//! where the extension cannot be created and there is no superuser).
//!
//! The SQL backend lives in `sql-backend/*.sql` (embedded in this crate). It has pgq 3.5's
//! tables, columns, sequences, functions (names, arguments, results, errors) and grants, so every
//! pgq client works on it unchanged. Its functions' behaviour was written from pgq's
//! documentation and black-box tests against the extension; `tests/backend` compares the two.
//!
//! How it coexists with our migrations: the first migration is `CREATE EXTENSION IF NOT EXISTS
//! pgq` (checksummed, never edited). On the SQL backend, `install()` installs the backend's
//! schema first, in one transaction, and records that first migration as applied (with its real
//! checksum) in our bookkeeping table, so sqlx's migrator skips it and applies the others on top,
//! unchanged. A comment on the `pgq` schema marks the backend and its revision; a database on one
//! backend is never switched to the other.

use std::fmt;
use std::str::FromStr;

use sqlx::{Connection, PgConnection, PgExecutor};

use crate::error::{Error, Op, Result, ResultExt};

const INSTALL: Op = Op::admin("install");
const DETECT: Op = Op::public("detect_backend");

/// Which implementation of the pgq schema a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// The pgq C extension (`CREATE EXTENSION pgq`; needs a superuser and the server package).
    Extension,
    /// This project's SQL implementation of pgq's API (installable by a database owner).
    Sql,
}

impl Backend {
    /// `"extension"` or `"sql"` (what `--backend` takes).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Extension => "extension",
            Backend::Sql => "sql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "extension" | "ext" => Ok(Backend::Extension),
            "sql" => Ok(Backend::Sql),
            other => Err(format!(
                "unknown pgq backend {other:?}: expected \"extension\" or \"sql\""
            )),
        }
    }
}

/// Options of [`crate::install_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstallOptions {
    /// The backend to install; `None` (the default) chooses: the extension when it can be
    /// created, else the SQL backend. A database already on a backend keeps it; asking for the
    /// other one is [`crate::ErrorKind::BackendMismatch`].
    pub backend: Option<Backend>,
}

impl InstallOptions {
    /// The defaults: choose the backend automatically.
    pub fn new() -> InstallOptions {
        InstallOptions::default()
    }

    /// Force one backend (`None`: choose automatically).
    pub fn backend(mut self, backend: Option<Backend>) -> InstallOptions {
        self.backend = backend;
        self
    }
}

/// Revision of the SQL backend embedded in this build; `install()` re-applies the backend to a
/// database with an older revision.
pub const SQL_BACKEND_REVISION: i32 = 3;

/// What `pgq.version()` answers on the SQL backend of this revision.
pub const SQL_BACKEND_VERSION: &str = "3.5-pgq_rs.sql.3";

/// Start of the comment on schema `pgq` that marks the SQL backend (followed by the revision).
const MARKER: &str = "pgq_rs SQL backend revision ";

/// The backend's scripts, applied in this order.
const SQL_FILES: &[(&str, &str)] = &[
    (
        "01_schema.sql",
        include_str!("../sql-backend/01_schema.sql"),
    ),
    ("02_queue.sql", include_str!("../sql-backend/02_queue.sql")),
    (
        "03_produce.sql",
        include_str!("../sql-backend/03_produce.sql"),
    ),
    (
        "04_consumer.sql",
        include_str!("../sql-backend/04_consumer.sql"),
    ),
    (
        "05_ticker.sql",
        include_str!("../sql-backend/05_ticker.sql"),
    ),
    ("06_batch.sql", include_str!("../sql-backend/06_batch.sql")),
    (
        "07_retry_maint.sql",
        include_str!("../sql-backend/07_retry_maint.sql"),
    ),
    (
        "08_grants.sql",
        include_str!("../sql-backend/08_grants.sql"),
    ),
    (
        "09_triggers.sql",
        include_str!("../sql-backend/09_triggers.sql"),
    ),
];

/// The roles the pgq API grants to; `pgq_admin` is a member of the other two.
const ROLES: [&str; 3] = ["pgq_reader", "pgq_writer", "pgq_admin"];

/// Serialises installs of the SQL backend (a transaction-level advisory lock; one-key space,
/// like sqlx's migrator and pgq-ticker's lock, with a value of its own: "pgq_sql").
const INSTALL_LOCK_KEY: i64 = 0x0070_6771_5f73_716c;

/// What a database has, as far as pgq goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detected {
    /// The pgq extension's version, when it is installed.
    pub(crate) extension: Option<String>,
    /// The SQL backend's revision, when it is installed.
    pub(crate) sql_revision: Option<i32>,
    /// A `pgq` schema exists.
    pub(crate) pgq_schema: bool,
}

impl Detected {
    pub(crate) fn backend(&self) -> Option<Backend> {
        if self.extension.is_some() {
            Some(Backend::Extension)
        } else if self.sql_revision.is_some() {
            Some(Backend::Sql)
        } else {
            None
        }
    }
}

pub(crate) async fn detect<'e>(ex: impl PgExecutor<'e>) -> Result<Detected> {
    let row = sqlx::query!(
        r#"select (select extversion from pg_extension where extname = 'pgq') as extension,
                  to_regnamespace('pgq') is not null as "pgq_schema!",
                  obj_description(to_regnamespace('pgq')::oid, 'pg_namespace') as marker"#
    )
    .fetch_one(ex)
    .await
    .op(DETECT)?;
    Ok(Detected {
        sql_revision: row.marker.as_deref().and_then(parse_marker),
        extension: row.extension,
        pgq_schema: row.pgq_schema,
    })
}

fn parse_marker(comment: &str) -> Option<i32> {
    let rest = comment.strip_prefix(MARKER)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which backend the current database runs pgq on (`None`: pgq is not installed, or its `pgq`
/// schema is neither the extension nor this project's SQL backend). Needs no pgq role.
pub async fn detect_backend<'e>(ex: impl PgExecutor<'e>) -> Result<Option<Backend>> {
    Ok(detect(ex).await?.backend())
}

/// What [`prepare`] decided and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    pub(crate) backend: Backend,
    /// Why this backend, and what was done to it (for the install report).
    pub(crate) note: String,
}

/// Make the database ready for our migrations on the right backend: keep an installed backend
/// (upgrading the SQL backend when this build's revision is newer), or choose and install one.
/// `first` is our first migration (`CREATE EXTENSION`), recorded as applied on the SQL backend.
pub(crate) async fn prepare(
    conn: &mut PgConnection,
    wanted: Option<Backend>,
    first: &sqlx::migrate::Migration,
) -> Result<Prepared> {
    let found = detect(&mut *conn).await?;
    match (found.backend(), wanted) {
        (Some(have), Some(want)) if have != want => {
            return Err(Error::BackendMismatch {
                installed: have,
                requested: want,
            });
        }
        (Some(Backend::Extension), _) => {
            return Ok(Prepared {
                backend: Backend::Extension,
                note: "the pgq extension is installed".to_owned(),
            });
        }
        (Some(Backend::Sql), _) => {
            let have = found.sql_revision.unwrap_or(0);
            if have >= SQL_BACKEND_REVISION {
                return Ok(Prepared {
                    backend: Backend::Sql,
                    note: format!("the SQL backend is installed (revision {have})"),
                });
            }
            install_sql(conn, first).await?;
            return Ok(Prepared {
                backend: Backend::Sql,
                note: format!(
                    "the SQL backend is installed; upgraded from revision {have} to \
                     {SQL_BACKEND_REVISION}"
                ),
            });
        }
        (None, _) if found.pgq_schema => {
            let backend = wanted.unwrap_or(Backend::Sql);
            return Err(Error::BackendUnavailable {
                backend,
                reason: "the database has a schema named pgq that is neither the pgq extension \
                         nor this project's SQL backend: rename or drop it first"
                    .to_owned(),
                source: None,
            });
        }
        (None, _) => {}
    }

    if wanted == Some(Backend::Sql) {
        install_sql(conn, first).await?;
        return Ok(Prepared {
            backend: Backend::Sql,
            note: "installed the SQL backend (requested)".to_owned(),
        });
    }
    match create_extension(conn).await? {
        Created::Yes => Ok(Prepared {
            backend: Backend::Extension,
            note: "created the pgq extension".to_owned(),
        }),
        Created::NotAvailable { package } if wanted == Some(Backend::Extension) => {
            Err(Error::PgqNotInstalled {
                message: format!(
                    "the PostgreSQL server has no pgq extension: install the {package} package \
                     on the database server (Debian/Ubuntu: `apt-get install {package}`), then \
                     run install again (or install the SQL backend, which needs no package)"
                ),
                source: None,
            })
        }
        Created::NotAllowed { message, source } if wanted == Some(Backend::Extension) => {
            Err(Error::BackendUnavailable {
                backend: Backend::Extension,
                reason: format!(
                    "this role may not create the pgq extension ({message}): run install as a \
                     superuser, or install the SQL backend (`--backend sql`)"
                ),
                source: Some(source),
            })
        }
        Created::NotAvailable { package } => {
            install_sql(conn, first).await?;
            Ok(Prepared {
                backend: Backend::Sql,
                note: format!(
                    "installed the SQL backend: the server has no pgq extension (package \
                     {package})"
                ),
            })
        }
        Created::NotAllowed { message, .. } => {
            install_sql(conn, first).await?;
            Ok(Prepared {
                backend: Backend::Sql,
                note: format!(
                    "installed the SQL backend: this role may not create the pgq extension \
                     ({message})"
                ),
            })
        }
    }
}

enum Created {
    Yes,
    NotAvailable {
        package: String,
    },
    NotAllowed {
        message: String,
        source: sqlx::Error,
    },
}

/// `CREATE EXTENSION pgq`, when the server has it and this role may create it.
async fn create_extension(conn: &mut PgConnection) -> Result<Created> {
    let avail = sqlx::query!(
        r#"select exists (select 1 from pg_available_extensions where name = 'pgq') as "available!",
                  current_setting('server_version_num')::int / 10000 as "major!""#
    )
    .fetch_one(&mut *conn)
    .await
    .op(INSTALL)?;
    if !avail.available {
        return Ok(Created::NotAvailable {
            package: format!("postgresql-{}-pgq3", avail.major),
        });
    }
    let mut tx = conn.begin().await.op(INSTALL)?;
    match sqlx::raw_sql("create extension if not exists pgq")
        .execute(&mut *tx)
        .await
    {
        Ok(_) => {
            tx.commit().await.op(INSTALL)?;
            Ok(Created::Yes)
        }
        Err(e) => {
            let code = e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned());
            // 42501: insufficient privilege; 0A000: feature not supported (a managed service's
            // extension allow-list).
            if matches!(code.as_deref(), Some("42501") | Some("0A000")) {
                let message = e
                    .as_database_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_default();
                let _ = tx.rollback().await;
                Ok(Created::NotAllowed { message, source: e })
            } else {
                Err(Error::from_sqlx(e, INSTALL))
            }
        }
    }
}

/// Install (or re-apply) the SQL backend in one transaction: the roles, the scripts, the marker,
/// and our first migration recorded as applied.
async fn install_sql(conn: &mut PgConnection, first: &sqlx::migrate::Migration) -> Result<()> {
    let mut tx = conn.begin().await.op(INSTALL)?;
    sqlx::query_scalar!("select set_config('client_min_messages', 'warning', true)")
        .fetch_one(&mut *tx)
        .await
        .op(INSTALL)?;
    sqlx::query!("select pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .op(INSTALL)?;
    // Another install may have finished while this one waited for the lock.
    let found = detect(&mut *tx).await?;
    if let Some(Backend::Extension) = found.backend() {
        return Err(Error::BackendMismatch {
            installed: Backend::Extension,
            requested: Backend::Sql,
        });
    }
    if found.sql_revision.unwrap_or(0) < SQL_BACKEND_REVISION {
        ensure_roles(&mut tx).await?;
        for (name, sql) in SQL_FILES {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::BackendUnavailable {
                    backend: Backend::Sql,
                    reason: format!("sql-backend/{name} failed: {e}"),
                    source: Some(e),
                })?;
        }
        let marker = format!(
            "{MARKER}{SQL_BACKEND_REVISION}: pgq 3.5's API in SQL and PL/pgSQL, installed by \
             pgq_core::install (pgq_rs); not the pgq extension"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "comment on schema pgq is {}",
            crate::quote_literal(&marker)
        )))
        .execute(&mut *tx)
        .await
        .op(INSTALL)?;
    }
    record_first_migration(&mut tx, first).await?;
    tx.commit().await.op(INSTALL)
}

/// Create the pgq roles that are missing (when this role may create roles) and the memberships
/// pgq has (`pgq_admin` is a member of `pgq_reader` and `pgq_writer`); make the installing role
/// a member of `pgq_admin` when it can (it owns every object anyway).
async fn ensure_roles(conn: &mut PgConnection) -> Result<()> {
    let me = sqlx::query!(
        r#"select current_user::text as "name!",
                  r.rolsuper as "superuser!", r.rolcreaterole as "createrole!",
                  array(select m from unnest($1::text[]) m
                         where not exists (select 1 from pg_roles x where x.rolname = m))
                    as "missing!"
             from pg_roles r
            where r.rolname = current_user"#,
        &ROLES.map(str::to_owned)[..]
    )
    .fetch_one(&mut *conn)
    .await
    .op(INSTALL)?;
    let may_create = me.superuser || me.createrole;
    if !me.missing.is_empty() && !may_create {
        return Err(Error::BackendUnavailable {
            backend: Backend::Sql,
            reason: format!(
                "the roles {} do not exist and role {} may not create roles: grant it CREATEROLE \
                 (or have an administrator run `CREATE ROLE <name> NOLOGIN` for each, and \
                 `GRANT pgq_reader, pgq_writer TO pgq_admin`), then run install again",
                me.missing.join(", "),
                me.name
            ),
            source: None,
        });
    }
    for role in &me.missing {
        // Roles are cluster-wide: an install in another database may create it at the same
        // time; that one wins and this statement changes nothing.
        let sql = format!(
            "do $$ begin create role {} nologin; exception when duplicate_object or \
             unique_violation then null; end $$",
            crate::quote_ident(role)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .op(INSTALL)?;
    }
    let grants = sqlx::query!(
        r#"select g.member as "member!", g.role as "role!"
             from (values ('pgq_admin', 'pgq_reader'), ('pgq_admin', 'pgq_writer'),
                          (current_user::text, 'pgq_admin')) g(member, role)
            where not pg_has_role(g.member, g.role, 'member')
              and not (g.member = current_user::text
                       and (select rolsuper from pg_roles where rolname = current_user))"#
    )
    .fetch_all(&mut *conn)
    .await
    .op(INSTALL)?;
    for g in grants {
        let own = g.member == me.name;
        let sql = format!(
            "grant {} to {}",
            crate::quote_ident(&g.role),
            crate::quote_ident(&g.member)
        );
        // The installer's own membership is a convenience (it owns every object); without the
        // right to grant it, install goes on.
        let res = if own {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "do $$ begin {sql}; exception when insufficient_privilege or \
                 invalid_grant_operation then null; end $$"
            )))
            .execute(&mut *conn)
            .await
        } else {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
        };
        res.map_err(|e| Error::BackendUnavailable {
            backend: Backend::Sql,
            reason: format!(
                "could not make {} a member of {} ({e}): an administrator can run `GRANT {} TO \
                 {}`",
                g.member, g.role, g.role, g.member
            ),
            source: Some(e),
        })?;
    }
    Ok(())
}

/// Record our first migration (`CREATE EXTENSION pgq`) as applied, with its real checksum, in
/// sqlx's bookkeeping table (created as sqlx creates it), so the migrator applies the rest.
async fn record_first_migration(
    conn: &mut PgConnection,
    first: &sqlx::migrate::Migration,
) -> Result<()> {
    sqlx::raw_sql(
        "create schema if not exists pgq_rs;
         create table if not exists pgq_rs._sqlx_migrations (
             version bigint primary key,
             description text not null,
             installed_on timestamptz not null default now(),
             success boolean not null,
             checksum bytea not null,
             execution_time bigint not null
         )",
    )
    .execute(&mut *conn)
    .await
    .op(INSTALL)?;
    sqlx::query!(
        r#"insert into pgq_rs._sqlx_migrations
               (version, description, success, checksum, execution_time)
           values ($1, $2, true, $3, 0)
           on conflict (version) do nothing"#,
        first.version,
        &*first.description,
        &*first.checksum
    )
    .execute(&mut *conn)
    .await
    .op(INSTALL)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_revision_is_parsed() {
        assert_eq!(parse_marker("pgq_rs SQL backend revision 1: pgq"), Some(1));
        assert_eq!(parse_marker("pgq_rs SQL backend revision 12"), Some(12));
        assert_eq!(parse_marker("something else"), None);
        assert_eq!(parse_marker("pgq_rs SQL backend revision x"), None);
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::Extension, Backend::Sql] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        assert!("c".parse::<Backend>().is_err());
    }

    #[test]
    fn version_string_matches_the_sql() {
        let queue_sql = SQL_FILES
            .iter()
            .find(|(n, _)| *n == "02_queue.sql")
            .map(|(_, s)| *s)
            .unwrap_or_default();
        assert!(queue_sql.contains(&format!("'{SQL_BACKEND_VERSION}'")));
        assert!(SQL_BACKEND_VERSION.ends_with(&format!(".sql.{SQL_BACKEND_REVISION}")));
    }
}
