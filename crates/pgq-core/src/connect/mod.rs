//! Where to connect, the way PostgreSQL users already write it: `postgres://` URLs and libpq
//! `key=value` strings, the `PG*` environment variables, service files, password files, TLS
//! settings, `connect_timeout`, keepalives, `application_name`, and several hosts with
//! `target_session_attrs`. Both programs (`pgq`, `pgq-ticker`) connect through this module, and
//! so can applications.
//!
//! ```no_run
//! use pgq_core::connect::ConnectTarget;
//!
//! # async fn demo() -> Result<(), pgq_core::connect::ConnectError> {
//! // A URL, a libpq string, or "" for the PG* variables alone.
//! let target = ConnectTarget::parse(
//!     "host=db1,db2 port=5432,5433 dbname=app user=pgq target_session_attrs=read-write",
//! )?
//! .with_default_application_name("my-service");
//! // The first host that accepts writes.
//! let mut conn = target.connect().await?;
//! // A pool whose new connections go to the current primary, also after a failover.
//! let pool = target.pool(sqlx::postgres::PgPoolOptions::new().max_connections(4)).await?;
//! # drop((conn, pool)); Ok(()) }
//! ```
//!
//! # What is read, and from where
//! Precedence as in libpq: the connection string, then the service it names (`service=`, else
//! `PGSERVICE`; looked up in `PGSERVICEFILE` or `~/.pg_service.conf`, then
//! `PGSYSCONFDIR/pg_service.conf`), then the environment (`PGHOST`, `PGHOSTADDR`, `PGPORT`,
//! `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGOPTIONS`, `PGAPPNAME`, `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGCONNECT_TIMEOUT`, `PGTARGETSESSIONATTRS`), then
//! the defaults: the default socket directory or `localhost`, port 5432, the operating system
//! user (`getpwuid`, as libpq; not `$USER`), a database named like the user. A host without a
//! password gets one from the password file (`passfile`, `PGPASSFILE`, `~/.pgpass`).
//!
//! Values are checked as libpq checks them: an unknown `sslmode` (`requir`), a non-numeric
//! `connect_timeout` or an unknown `target_session_attrs` is an error, not a silent default.
//! Every password read is registered with [`crate::redact`].
//!
//! # Several hosts
//! `host=a,b port=5432,5433` (or `postgres://a:5432,b:5433/db`) lists candidates. Hosts are tried
//! in order, each within `connect_timeout`; with `target_session_attrs` (`read-write`,
//! `read-only`, `primary`, `standby`, `prefer-standby`; default `any`) a host is used only when
//! it matches (`read-write`: `transaction_read_only` is off; `primary`: not in recovery). Every
//! [`ConnectTarget::connect`] tries them all again, so reconnecting after a lost connection finds
//! the new primary after a failover. A [`ConnectTarget::pool`] follows a failover by itself (its
//! connections are checked before use, and the pool is re-pointed at the host that matches now),
//! and so does a tick listener on it ([`crate::TickWakeups`] with [`crate::ListenVia::Pool`]).

mod build;
mod params;
mod pool;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::redact::redact;
use crate::session::{Keepalives, SessionSettings, configure_session};

pub use build::os_user;
pub(crate) use params::connstr_pairs;

/// Which server of several hosts a connection may use (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// Any server (the default).
    #[default]
    Any,
    /// A server that accepts writes (`transaction_read_only` off).
    ReadWrite,
    /// A server in read-only mode (`transaction_read_only` on).
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a standby).
    Standby,
    /// A standby if one answers, else any server.
    PreferStandby,
}

impl FromStr for TargetSessionAttrs {
    type Err = ConnectError;

    fn from_str(s: &str) -> Result<Self, ConnectError> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(ConnectError::invalid(format!(
                    "invalid target_session_attrs value: {other:?} (any, read-write, read-only, \
                     primary, standby or prefer-standby)"
                )));
            }
        })
    }
}

impl TargetSessionAttrs {
    /// libpq's name of the setting.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server with these properties matches (`PreferStandby`: its first pass).
    fn matches(self, read_only: bool, in_recovery: bool) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !read_only,
            TargetSessionAttrs::ReadOnly => read_only,
            TargetSessionAttrs::Primary => !in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => in_recovery,
        }
    }
}

/// Connection settings that are invalid, or no host that could be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The settings are invalid (the message names the parameter; passwords are masked).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// No host could be connected to, or none matched `target_session_attrs`.
    #[error("could not connect to {target}: {}", .attempts.join("; "))]
    Failed {
        /// The target, without its password.
        target: String,
        /// What happened on each host, in order (passwords masked).
        attempts: Vec<String>,
        /// Whether every host was reached but none matched `target_session_attrs`.
        no_match: bool,
        /// Whether every failure was a timeout (`connect_timeout`).
        timed_out: bool,
    },
}

impl ConnectError {
    fn invalid(message: impl AsRef<str>) -> ConnectError {
        ConnectError::Invalid {
            message: redact(message.as_ref()),
        }
    }
}

/// The per-host connect timeout of [`ConnectTarget::parse_for`] when `connect_timeout` /
/// `PGCONNECT_TIMEOUT` set none: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect and how: one [`PgConnectOptions`] per host, and the settings sqlx has no
/// place for (connect timeout, keepalives, `target_session_attrs`). See the
/// [module](self) documentation.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    hosts: Vec<PgConnectOptions>,
    connect_timeout: Option<Duration>,
    keepalives: Keepalives,
    target_session_attrs: TargetSessionAttrs,
    application_name_given: bool,
}

impl ConnectTarget {
    /// Read a connection string (a `postgres://` URL or a libpq `key=value` string; empty for
    /// none), with what it leaves open taken from the service file, the `PG*` variables and the
    /// defaults.
    pub fn parse(connstr: &str) -> Result<ConnectTarget, ConnectError> {
        let p = if connstr.trim().is_empty() {
            params::Params::new()
        } else {
            params::parse_connstr(connstr)
                .map_err(|e| ConnectError::invalid(format!("invalid connection string: {e}")))?
        };
        build::build(p)
    }

    /// [`parse`](Self::parse) for the program `application_name`, as the `pgq` CLI and
    /// `pgq-ticker` read their connection strings: `application_name` defaults to it
    /// ([`with_default_application_name`](Self::with_default_application_name)), the connect
    /// timeout to [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn parse_for(connstr: &str, application_name: &str) -> Result<ConnectTarget, ConnectError> {
        Ok(Self::parse(connstr)?
            .with_default_application_name(application_name)
            .with_default_connect_timeout(DEFAULT_CONNECT_TIMEOUT))
    }

    /// The target of the `PG*` variables (and service file) alone: `parse("")`.
    pub fn from_env() -> Result<ConnectTarget, ConnectError> {
        Self::parse("")
    }

    /// Set `application_name` to `name` unless the connection string, the service file or
    /// `PGAPPNAME` set it (programs pass their own name, so operators see who is connected).
    pub fn with_default_application_name(mut self, name: &str) -> ConnectTarget {
        if !self.application_name_given {
            self.hosts = self
                .hosts
                .into_iter()
                .map(|o| o.application_name(name))
                .collect();
        }
        self
    }

    /// Use `timeout` per host when `connect_timeout` / `PGCONNECT_TIMEOUT` set none.
    pub fn with_default_connect_timeout(mut self, timeout: Duration) -> ConnectTarget {
        self.connect_timeout.get_or_insert(timeout);
        self
    }

    /// Set the per-host connect timeout (`None`: wait as long as the network does).
    pub fn with_connect_timeout(mut self, timeout: Option<Duration>) -> ConnectTarget {
        self.connect_timeout = timeout;
        self
    }

    /// The same target with database `name`.
    pub fn with_database(&self, name: &str) -> ConnectTarget {
        self.map_options(|o| o.database(name))
    }

    /// The same target with `f` applied to every host's options (e.g. to add
    /// `statement_timeout` with [`PgConnectOptions::options`]).
    pub fn map_options(&self, f: impl Fn(PgConnectOptions) -> PgConnectOptions) -> ConnectTarget {
        ConnectTarget {
            hosts: self.hosts.iter().cloned().map(f).collect(),
            ..self.clone()
        }
    }

    /// The candidate hosts' options, in the order they are tried (at least one).
    pub fn hosts(&self) -> &[PgConnectOptions] {
        &self.hosts
    }

    /// The per-host connect timeout (`connect_timeout`, `PGCONNECT_TIMEOUT`), if any.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The session's TCP keepalive probing (libpq `keepalives*`).
    pub fn keepalives(&self) -> Keepalives {
        self.keepalives
    }

    /// Which host may be used.
    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// The database.
    pub fn database(&self) -> &str {
        self.hosts[0].get_database().unwrap_or_default()
    }

    /// The user.
    pub fn user(&self) -> &str {
        self.hosts[0].get_username()
    }

    /// `host:port[,host:port...]/dbname` (for labels, logs and metrics; no user, no password).
    pub fn label(&self) -> String {
        format!("{}/{}", self.host_list(), self.database())
    }

    /// `host:port[,host:port...]`.
    pub fn host_list(&self) -> String {
        self.hosts
            .iter()
            .map(host_port)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `user@host:port[,...]/dbname`, never with a password.
    pub fn describe(&self) -> String {
        format!("{}@{}", self.user(), self.label())
    }

    /// The session settings of [`connect`](Self::connect): the keepalives, nothing else.
    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            keepalives: self.keepalives,
            idle_session_timeout: None,
        }
    }

    /// Connect to the first host that answers within the connect timeout and matches
    /// `target_session_attrs`, and set up the session ([`configure_session`] with the
    /// keepalives).
    pub async fn connect(&self) -> Result<PgConnection, ConnectError> {
        self.connect_with(&self.session_settings()).await
    }

    /// [`connect`](Self::connect) with other session settings.
    pub async fn connect_with(
        &self,
        settings: &SessionSettings,
    ) -> Result<PgConnection, ConnectError> {
        self.connect_index(settings).await.map(|(c, _)| c)
    }

    /// [`connect_with`](Self::connect_with), and which host it used (an index into
    /// [`hosts`](Self::hosts)).
    pub async fn connect_index(
        &self,
        settings: &SessionSettings,
    ) -> Result<(PgConnection, usize), ConnectError> {
        let attrs = self.target_session_attrs;
        let mut attempts = Vec::new();
        let (mut no_match, mut timed_out) = (true, true);
        let passes: &[bool] = if attrs == TargetSessionAttrs::PreferStandby {
            &[true, false]
        } else {
            &[true]
        };
        for &strict in passes {
            for (i, o) in self.hosts.iter().enumerate() {
                let check = strict && attrs != TargetSessionAttrs::Any;
                match self.try_host(o, settings, check.then_some(attrs)).await {
                    Ok(conn) => return Ok((conn, i)),
                    Err(HostFailure::NoMatch(m)) => {
                        timed_out = false;
                        attempts.push(format!("{}: {m}", host_port(o)))
                    }
                    Err(HostFailure::Error(m, t)) => {
                        no_match = false;
                        timed_out &= t;
                        attempts.push(format!("{}: {m}", host_port(o)))
                    }
                }
            }
        }
        Err(ConnectError::Failed {
            target: self.describe(),
            attempts,
            no_match,
            timed_out,
        })
    }

    async fn try_host(
        &self,
        o: &PgConnectOptions,
        settings: &SessionSettings,
        attrs: Option<TargetSessionAttrs>,
    ) -> Result<PgConnection, HostFailure> {
        let attempt = async {
            let mut conn = PgConnection::connect_with(o)
                .await
                .map_err(|e| HostFailure::Error(redact(&e.to_string()), false))?;
            let setup = async {
                configure_session(&mut conn, settings)
                    .await
                    .map_err(|e| HostFailure::Error(redact(&e.to_string()), false))?;
                if let Some(attrs) = attrs {
                    check_attrs(&mut conn, attrs).await?;
                }
                Ok(())
            };
            match setup.await {
                Ok(()) => Ok(conn),
                Err(e) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                    Err(e)
                }
            }
        };
        match self.connect_timeout {
            None => attempt.await,
            Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
                Err(HostFailure::Error(
                    format!(
                        "no answer within {} (connect_timeout)",
                        crate::duration::format_duration(t)
                    ),
                    true,
                ))
            }),
        }
    }
}

enum HostFailure {
    /// Reached, but does not match `target_session_attrs`.
    NoMatch(String),
    /// Not reached, or the session could not be set up (`true`: a timeout).
    Error(String, bool),
}

impl HostFailure {
    fn message(&self) -> &str {
        match self {
            HostFailure::NoMatch(m) | HostFailure::Error(m, _) => m,
        }
    }
}

/// Check the server of `conn` against `attrs`.
async fn check_attrs(
    conn: &mut PgConnection,
    attrs: TargetSessionAttrs,
) -> Result<(), HostFailure> {
    let row = sqlx::query!(
        r#"select current_setting('transaction_read_only') = 'on' as "read_only!",
                  pg_is_in_recovery() as "in_recovery!""#
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| HostFailure::Error(redact(&e.to_string()), false))?;
    if attrs.matches(row.read_only, row.in_recovery) {
        Ok(())
    } else {
        let what = match (row.read_only, row.in_recovery) {
            (_, true) => "a standby (in recovery)",
            (true, false) => "read-only",
            (false, false) => "a primary (read-write)",
        };
        Err(HostFailure::NoMatch(format!(
            "is {what}, not target_session_attrs={}",
            attrs.as_str()
        )))
    }
}

/// `host:port`, or `socket-dir:port`.
fn host_port(o: &PgConnectOptions) -> String {
    match o.get_socket() {
        Some(dir) => format!("{}:{}", dir.display(), o.get_port()),
        None if o.get_host().contains(':') => format!("[{}]:{}", o.get_host(), o.get_port()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    }
}

#[cfg(test)]
mod tests;
