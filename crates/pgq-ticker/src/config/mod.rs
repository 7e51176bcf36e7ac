//! Configuration: command-line flags, a TOML file, or a pgqd.ini read as is.
//!
//! Precedence: built-in defaults (pgqd's), then the config file, then flags. Databases come from
//! `--db` (repeatable), the config file (`database_list` on `base_connstr`, discovery from
//! `initial_database`, or TOML `databases` URLs), else `DATABASE_URL`, else libpq's `PG*`
//! variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, ...).
//!
//! Connection strings are read by [`pgq_core::connect`], durations by [`pgq_core::duration`];
//! the submodules read the flags ([`Args`]), TOML files and pgqd.ini files.

mod args;
mod file;
mod pgqd_ini;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgq_core::connect::ConnectTarget;
use serde::Deserialize;

use crate::error::{Error, Result};

pub use args::Args;
pub use pgqd_ini::{PGQD_INI_KEYS, parse_pgqd_ini_keys};

/// The `application_name` the ticker's sessions use (also how another ticker recognises them).
pub const APPLICATION_NAME: &str = "pgq-ticker";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How often the ticker does what (pgqd's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// `pgq.ticker()` period (default 1 s).
    pub ticker: Duration,
    /// Retry mover period (default 30 s).
    pub retry: Duration,
    /// Maintenance period (default 120 s).
    pub maint: Duration,
    /// Database discovery period; also how often a database without pgq is looked at again
    /// (default 60 s).
    pub check: Duration,
    /// Stats line and metrics refresh period (default 30 s).
    pub stats: Duration,
    /// Sessions are reconnected after this long (default 1 h).
    pub connection_lifetime: Duration,
    /// Fast-tick poll period for `ticker_max_lag = 0` queues (default 2 ms).
    pub fast_poll: Duration,
}

impl Default for Periods {
    fn default() -> Self {
        Periods {
            ticker: Duration::from_secs(1),
            retry: Duration::from_secs(30),
            maint: Duration::from_secs(120),
            check: Duration::from_secs(60),
            stats: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(3600),
            fast_poll: Duration::from_millis(2),
        }
    }
}

/// One database to tick.
#[derive(Debug, Clone)]
pub struct Database {
    /// Stable label (`host:port[,host:port...]/dbname`), used in logs, metrics and health.
    pub label: String,
    /// How to connect (every host, `connect_timeout`, `target_session_attrs`).
    pub target: ConnectTarget,
    /// TCP keepalive probing of its sessions (the libpq `keepalives*` parameters of its
    /// connection string, else the defaults of [`pgq_core::Keepalives`]).
    pub keepalives: pgq_core::Keepalives,
}

/// A server whose databases are discovered (every database that accepts connections; those
/// without pgq are looked at again every check period).
#[derive(Debug, Clone)]
pub struct Discovery {
    /// How to connect to the server (its database is replaced by each discovered one).
    pub base: ConnectTarget,
    /// The database to connect to for listing the others (pgqd: `initial_database`).
    pub initial_database: String,
    /// TCP keepalive probing of the sessions (from the libpq `keepalives*` parameters).
    pub keepalives: pgq_core::Keepalives,
}

impl Discovery {
    /// The [`Database`] entry for database `name` on this server.
    pub fn database(&self, name: &str) -> Database {
        database_entry(self.base.with_database(name))
    }
}

fn database_entry(target: ConnectTarget) -> Database {
    Database {
        label: target.label(),
        keepalives: target.keepalives(),
        target,
    }
}

/// The complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Databases named explicitly.
    pub databases: Vec<Database>,
    /// Servers whose databases are discovered.
    pub discover: Vec<Discovery>,
    /// Periods.
    pub periods: Periods,
    /// `statement_timeout` of the ticking session (default 30 s).
    pub tick_statement_timeout: Duration,
    /// `statement_timeout` of the maintenance session (default 15 min; VACUUM can be slow).
    pub maint_statement_timeout: Duration,
    /// How often a standby retries the ticker lock (default 1 s).
    pub standby_retry: Duration,
    /// Pid file.
    pub pidfile: Option<PathBuf>,
    /// Log file (stderr when `None`).
    pub logfile: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Address of the metrics/health endpoint.
    pub http: Option<SocketAddr>,
    /// Exit when a database stays unreachable this long.
    pub exit_after_failure: Option<Duration>,
    /// Notes about accepted-but-ignored settings (e.g. pgqd's `syslog`), logged at startup.
    pub notes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            databases: Vec::new(),
            discover: Vec::new(),
            periods: Periods::default(),
            tick_statement_timeout: Duration::from_secs(30),
            maint_statement_timeout: Duration::from_secs(15 * 60),
            standby_retry: Duration::from_secs(1),
            pidfile: None,
            logfile: None,
            log_format: LogFormat::Text,
            http: None,
            exit_after_failure: None,
            notes: Vec::new(),
        }
    }
}

impl Config {
    /// Build the configuration from command-line arguments: read the config file they name (if
    /// any), apply flags, resolve databases (falling back to `DATABASE_URL`, then `PG*`
    /// variables) and validate everything.
    pub fn from_args(args: &Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => Some(file::read_config_file(path)?),
            None => None,
        };
        let mut cfg = Config::default();
        let origin = args.config.as_ref().map(|p| p.display().to_string());
        if let Some(file) = &file {
            file::apply_file(&mut cfg, file, origin.as_deref())?;
        }
        args::apply_args(&mut cfg, args)?;
        if cfg.databases.is_empty() && cfg.discover.is_empty() {
            let options = default_options()?;
            if args.discover {
                cfg.discover.push(discovery_from(options));
            } else {
                cfg.databases.push(database_entry(options));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check invariants (positive periods, sensible fast poll).
    pub fn validate(&self) -> Result<()> {
        let p = &self.periods;
        for (name, d) in [
            ("ticker_period", p.ticker),
            ("retry_period", p.retry),
            ("maint_period", p.maint),
            ("check_period", p.check),
            ("stats_period", p.stats),
            ("connection_lifetime", p.connection_lifetime),
            ("fast_poll", p.fast_poll),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Error::config(
                    Some(name.to_owned()),
                    format!(
                        "{name} must be at least 1ms (got {})",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        if self.databases.is_empty() && self.discover.is_empty() {
            return Err(Error::config(
                None,
                "no database to tick: pass --db URL, set DATABASE_URL or PGDATABASE, or give a config file",
            ));
        }
        Ok(())
    }

    /// A readable summary (for `--check-config` and the startup log).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for d in &self.databases {
            s.push_str(&format!("database {}\n", d.label));
        }
        for d in &self.discover {
            s.push_str(&format!(
                "discover databases on {} via {}\n",
                d.base.host_list(),
                d.initial_database
            ));
        }
        let p = &self.periods;
        let f = |d: Duration| humantime::format_duration(d).to_string();
        s.push_str(&format!(
            "ticker_period {} retry_period {} maint_period {} check_period {} stats_period {} \
             connection_lifetime {} fast_poll {}\n",
            f(p.ticker),
            f(p.retry),
            f(p.maint),
            f(p.check),
            f(p.stats),
            f(p.connection_lifetime),
            f(p.fast_poll)
        ));
        if let Some(h) = self.http {
            s.push_str(&format!("http {h}\n"));
        }
        s
    }
}

fn discovery_from(target: ConnectTarget) -> Discovery {
    Discovery {
        initial_database: target.database().to_owned(),
        keepalives: target.keepalives(),
        base: target,
    }
}

/// The connection when no database is configured: `DATABASE_URL`, else libpq's `PG*` variables
/// (which need at least `PGDATABASE` or `PGHOST` set, so that a bare start is an error).
fn default_options() -> Result<ConnectTarget> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.trim().is_empty()
    {
        return parse_target(url.trim()).map_err(|m| Error::config(Some("DATABASE_URL".into()), m));
    }
    let any_pg = [
        "PGDATABASE",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGSERVICE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if any_pg {
        return parse_target("").map_err(|m| Error::config(Some("PG* variables".into()), m));
    }
    Err(Error::config(
        None,
        "no database to tick: pass --db URL, set DATABASE_URL or PG* variables (PGDATABASE, \
         PGHOST, ...), or give a config file",
    ))
}

/// Read a connection string (a `postgres://` URL or a libpq `key=value` string, several hosts
/// allowed; empty: the `PG*` variables alone) with [`ConnectTarget::parse`]: what it leaves
/// open comes from the service file and the `PG*` variables, as in libpq. `application_name`
/// defaults to [`APPLICATION_NAME`]; the connect timeout to
/// [`pgq_core::connect::DEFAULT_CONNECT_TIMEOUT`] ([`ConnectTarget::parse_for`]).
pub fn parse_target(s: &str) -> std::result::Result<ConnectTarget, String> {
    ConnectTarget::parse_for(s, APPLICATION_NAME).map_err(|e| e.to_string())
}

fn parse_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    let s = s.trim();
    // `:PORT` is the loopback interface: metrics are not published unless asked for.
    let with_host = if s.starts_with(':') {
        format!("127.0.0.1{s}")
    } else {
        s.to_owned()
    };
    with_host
        .parse()
        .map_err(|_| format!("expected an address like 127.0.0.1:9187, got {s:?}"))
}

/// Parse a duration: [`pgq_core::duration::parse_duration`] (`500ms`, `2m`, or seconds as in
/// pgqd.ini: `1`, `0.01`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    pgq_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.01").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn keyword_connstr() {
        let t = parse_target("host=db1 port=6543 user='pgq admin' dbname = x").unwrap();
        let o = &t.hosts()[0];
        assert_eq!(o.get_host(), "db1");
        assert_eq!(o.get_port(), 6543);
        assert_eq!(o.get_username(), "pgq admin");
        assert_eq!(o.get_database(), Some("x"));
        assert_eq!(o.get_application_name(), Some(APPLICATION_NAME));
        assert!(parse_target("host").is_err());
        assert!(parse_target("bogus=1").is_err());
        assert!(parse_target("user='x").is_err());
    }

    #[test]
    fn http_port_alone_is_loopback() {
        assert_eq!(parse_addr(":9187").unwrap().to_string(), "127.0.0.1:9187");
        assert_eq!(
            parse_addr("0.0.0.0:9187").unwrap().to_string(),
            "0.0.0.0:9187"
        );
    }

    #[test]
    fn libpq_keepalive_parameters_are_honoured() {
        let t = parse_target(
            "host=db1 dbname=x keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=4",
        )
        .unwrap();
        assert_eq!(t.database(), "x");
        assert_eq!(t.keepalives().dead_after(), Duration::from_secs(6));
        let t = parse_target("postgres://h/db?keepalives=0").unwrap();
        assert!(!t.keepalives().enabled);
        let e = parse_target("host=h keepalives_idle=soon").unwrap_err();
        assert!(e.contains("keepalives_idle"), "{e}");
    }
}
