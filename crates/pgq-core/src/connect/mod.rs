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
//! the new primary after a failover.

mod params;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::redact::redact;
use crate::session::{Keepalives, SessionSettings, configure_session};

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

/// Read the environment and the defaults into `p`, and build the target.
fn build(mut p: params::Params) -> Result<ConnectTarget, ConnectError> {
    let service = p
        .get("service")
        .cloned()
        .or_else(|| params::env("PGSERVICE"));
    if let Some(service) = service {
        params::apply_service(&mut p, &service).map_err(ConnectError::invalid)?;
    }
    for (key, var) in params::ENV {
        if !p.contains_key(*key)
            && let Some(v) = params::env(var)
        {
            if *key == "password" {
                crate::redact::remember_secret(&v);
            }
            p.insert((*key).to_owned(), v);
        }
    }
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let ssl_mode = match get("sslmode") {
        None => PgSslMode::Prefer,
        Some(v) => PgSslMode::from_str(v).map_err(|_| {
            ConnectError::invalid(format!(
                "invalid sslmode value: {v:?} (disable, allow, prefer, require, verify-ca or \
                 verify-full)"
            ))
        })?,
    };
    let connect_timeout = match get("connect_timeout") {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            // libpq: zero or negative waits forever. (libpq raises 1 to 2 s; taken as given
            // here: a user who writes 1 means it.)
            Ok(n) if n <= 0 => None,
            Ok(n) => Some(Duration::from_secs(n as u64)),
            Err(_) => {
                return Err(ConnectError::invalid(format!(
                    "invalid integer value {v:?} for connection option \"connect_timeout\""
                )));
            }
        },
    };
    let target_session_attrs = match get("target_session_attrs") {
        None => TargetSessionAttrs::Any,
        Some(v) => v.parse()?,
    };
    if let Some(v) = get("client_encoding")
        && !matches!(
            v.to_ascii_lowercase().as_str(),
            "utf8" | "utf-8" | "unicode" | "auto"
        )
    {
        return Err(ConnectError::invalid(format!(
            "client_encoding {v:?} is not supported (only UTF8)"
        )));
    }
    if let Some(v) = get("load_balance_hosts")
        && v != "disable"
    {
        return Err(ConnectError::invalid(format!(
            "load_balance_hosts={v:?} is not supported (only disable: hosts are tried in order)"
        )));
    }
    let keepalives = Keepalives::from_params(
        p.iter()
            .filter(|(k, _)| k.starts_with("keepalives"))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| ConnectError::invalid(e.to_string()))?;
    let user = match get("user") {
        Some(u) => u.to_owned(),
        None => os_user().map_err(|e| {
            ConnectError::invalid(format!(
                "no user given (user=, PGUSER) and the operating system user is unknown: {e}"
            ))
        })?,
    };
    let dbname = get("dbname").unwrap_or(&user).to_owned();
    let application_name = get("application_name").or(get("fallback_application_name"));
    let extra = match get("options") {
        Some(o) => params::pg_options(o).map_err(ConnectError::invalid)?,
        None => Vec::new(),
    };

    let mut hosts = params::list(p.get("host").filter(|h| !h.is_empty()));
    let addrs = params::list(p.get("hostaddr").filter(|h| !h.is_empty()));
    if hosts.is_empty() {
        hosts = if addrs.is_empty() {
            vec![String::new()]
        } else {
            addrs.clone()
        };
    }
    if !addrs.is_empty() && addrs.len() != hosts.len() {
        return Err(ConnectError::invalid(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        )));
    }
    let ports = params::list(p.get("port").filter(|h| !h.is_empty()));
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(ConnectError::invalid(format!(
            "could not match {} port numbers to {} hosts",
            ports.len(),
            hosts.len()
        )));
    }
    let passfile = params::passfile(&p);
    let mut out = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let port_text = ports
            .get(if ports.len() == 1 { 0 } else { i })
            .map(String::as_str)
            .unwrap_or("");
        let port: u16 = if port_text.is_empty() {
            5432
        } else {
            port_text
                .parse()
                .map_err(|_| ConnectError::invalid(format!("invalid port number: {port_text:?}")))?
        };
        // hostaddr, when given, is where to connect (sqlx has one name for both).
        let host = addrs.get(i).filter(|a| !a.is_empty()).unwrap_or(host);
        let host = if host.is_empty() {
            default_host(port)
        } else {
            host.clone()
        };
        let mut o = PgConnectOptions::new_without_pgpass()
            .port(port)
            .username(&user)
            .database(&dbname)
            .ssl_mode(ssl_mode);
        o = if host.starts_with('/') {
            o.socket(&host).host("localhost")
        } else {
            o.host(&host)
        };
        let password = match get("password") {
            Some(pw) => Some(pw.to_owned()),
            None => passfile
                .as_deref()
                .and_then(|f| params::pgpass_lookup(f, &host, port, &dbname, &user)),
        };
        if let Some(pw) = password {
            o = o.password(&pw);
        }
        if let Some(v) = get("sslrootcert") {
            o = o.ssl_root_cert(v);
        }
        if let Some(v) = get("sslcert") {
            o = o.ssl_client_cert(v);
        }
        if let Some(v) = get("sslkey") {
            o = o.ssl_client_key(v);
        }
        if let Some(v) = application_name {
            o = o.application_name(v);
        }
        if !extra.is_empty() {
            o = o.options(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        out.push(o.disable_statement_logging());
    }
    Ok(ConnectTarget {
        hosts: out,
        connect_timeout,
        keepalives,
        target_session_attrs,
        application_name_given: application_name.is_some(),
    })
}

/// The operating system user this process runs as (its effective uid's name in the password
/// database), as libpq defaults to; `$USER` plays no part. (sqlx's own default, without the
/// `std` feature of its `whoami`, is `anonymous`.)
pub fn os_user() -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    // `/proc/self` belongs to the process's effective uid.
    let uid = std::fs::metadata("/proc/self")?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            Some((name, id))
        })
        .find(|(_, id)| *id == uid)
        .map(|(name, _)| name.to_owned())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("uid {uid} is not in /etc/passwd"),
            )
        })
}

/// libpq's default: the default socket directory when the server's socket is there, else
/// `localhost`.
fn default_host(port: u16) -> String {
    for dir in ["/var/run/postgresql", "/run/postgresql", "/tmp"] {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return dir.to_owned();
        }
    }
    "localhost".to_owned()
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
        build(p)
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

    /// A pool of connections to the host [`connect`](Self::connect) would use. Each new
    /// connection is set up with the keepalives and checked against `target_session_attrs`;
    /// with several hosts or a `target_session_attrs`, a watcher task checks the pool once a
    /// second (one idle connection, pinged) and, when the pool cannot reach a matching server,
    /// points it at the host that matches now (a failover). The watcher ends when the pool is
    /// closed ([`PgPool::close`]; close the pool when done with it).
    ///
    /// `options`' own `after_connect` is replaced.
    pub async fn pool(&self, options: PgPoolOptions) -> Result<PgPool, ConnectError> {
        let (conn, index) = self.connect_index(&self.session_settings()).await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        let settings = self.session_settings();
        let attrs = self.target_session_attrs;
        let connect_timeout = self.connect_timeout.unwrap_or(Duration::from_secs(10));
        let pool = options
            .test_before_acquire(true)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    configure_session(conn, &settings)
                        .await
                        .map_err(|e| sqlx::Error::Configuration(e.into()))?;
                    if !matches!(
                        attrs,
                        TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby
                    ) {
                        check_attrs(conn, attrs).await.map_err(|e| match e {
                            HostFailure::NoMatch(m) | HostFailure::Error(m, _) => {
                                sqlx::Error::Configuration(m.into())
                            }
                        })?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(self.hosts[index].clone());
        if self.hosts.len() > 1 || attrs != TargetSessionAttrs::Any {
            tokio::spawn(watch_pool(
                Arc::new(self.clone()),
                pool.clone(),
                connect_timeout,
            ));
        }
        Ok(pool)
    }
}

/// Keep `pool` pointed at a matching host (see [`ConnectTarget::pool`]).
async fn watch_pool(target: Arc<ConnectTarget>, pool: PgPool, limit: Duration) {
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Every connection busy: the pool works.
        if pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections() {
            continue;
        }
        let healthy = matches!(
            tokio::time::timeout(limit.min(Duration::from_secs(2)), pool.acquire()).await,
            Ok(Ok(_))
        );
        if healthy {
            continue;
        }
        match target.connect_index(&target.session_settings()).await {
            Ok((conn, i)) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                let current = pool.connect_options();
                let next = &target.hosts[i];
                if host_port(&current) != host_port(next) {
                    tracing::info!(
                        from = %host_port(&current),
                        to = %host_port(next),
                        "pool: switching to the host that matches target_session_attrs"
                    );
                }
                pool.set_connect_options(next.clone());
            }
            Err(e) => tracing::debug!("pool: no matching host yet: {e}"),
        }
    }
}

enum HostFailure {
    /// Reached, but does not match `target_session_attrs`.
    NoMatch(String),
    /// Not reached, or the session could not be set up (`true`: a timeout).
    Error(String, bool),
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
