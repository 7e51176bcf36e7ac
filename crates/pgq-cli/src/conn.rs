//! Where to connect: `--db`, `DATABASE_URL`, or the libpq `PG*` variables, read by
//! [`pgq_core::connect::ConnectTarget`] (URLs and libpq strings, several hosts with
//! `target_session_attrs`, service and password files); the connect timeout; and keeping
//! passwords out of every message ([`pgq_core::redact`]).

use std::time::Duration;

use pgq_core::connect::{ConnectError, ConnectTarget, DEFAULT_CONNECT_TIMEOUT};
use pgq_core::sqlx::Connection;
use pgq_core::sqlx::postgres::PgConnection;

use crate::error::CliError;

/// The `application_name` of the CLI's sessions (unless the connection settings name one).
const APPLICATION_NAME: &str = "pgq-cli";

/// Replace every known secret in `text` with `***`.
pub(crate) fn redact(text: &str) -> String {
    pgq_core::redact::redact(text)
}

/// The database to talk to.
#[derive(Debug)]
pub(crate) struct Target {
    target: ConnectTarget,
}

impl Target {
    /// Resolve the target from `--db`, else `DATABASE_URL`, else the `PG*` variables.
    pub(crate) fn resolve(db: Option<&str>, timeout: Option<Duration>) -> Result<Target, CliError> {
        let env_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        let (connstr, from) = match (db, env_url.as_deref()) {
            (Some(u), _) => (u, "--db"),
            (None, Some(u)) => (u, "DATABASE_URL"),
            (None, None) => ("", "the PG* variables"),
        };
        // The connect timeout defaults to pgq_core's when neither `--connect-timeout`,
        // `connect_timeout=` nor `PGCONNECT_TIMEOUT` says otherwise.
        let target =
            ConnectTarget::parse_for(connstr, APPLICATION_NAME).map_err(|e| CliError::Connect {
                message: format!(
                    "the connection string from {from} is not valid: {e} (write a URL like \
                     postgres://user@host:5432/dbname or key=value pairs like \"host=db1 \
                     dbname=app user=pgq\")"
                ),
            })?;
        Ok(Target {
            target: match timeout {
                Some(t) => target.with_connect_timeout(Some(t)),
                None => target,
            },
        })
    }

    /// The connection settings (every host; each connect picks one again).
    pub(crate) fn connect_target(&self) -> &ConnectTarget {
        &self.target
    }

    /// `user@host:port[,host:port...]/db`, never with a password.
    pub(crate) fn describe(&self) -> String {
        self.target.describe()
    }

    /// Connect to the first host that answers within the connect timeout (and matches
    /// `target_session_attrs`). The session gets server-side TCP keepalives
    /// ([`pgq_core::configure_session`]; the libpq `keepalives*` parameters size them), so the
    /// server ends it when the client's network is gone.
    pub(crate) async fn connect(&self) -> Result<PgConnection, CliError> {
        let hint = "check --db, DATABASE_URL or the PG* variables, and that the server is running";
        match self.target.connect().await {
            Ok(conn) => Ok(conn),
            Err(ConnectError::Failed {
                timed_out: true,
                attempts,
                ..
            }) if attempts.len() == 1 => Err(CliError::Connect {
                message: format!(
                    "could not connect to {}: no answer within {} (--connect-timeout): {hint}",
                    self.describe(),
                    pgq_core::duration::format_duration(
                        self.target
                            .connect_timeout()
                            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
                    )
                ),
            }),
            Err(e) => Err(CliError::Connect {
                message: format!("{}: {hint}", redact(&e.to_string())),
            }),
        }
    }
}

/// Close a connection politely (errors do not matter any more), unless that takes more than a
/// moment (a half-open connection never answers): then drop it.
pub(crate) async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
}
