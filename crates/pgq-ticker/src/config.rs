//! Configuration: command-line flags, a TOML file, or a pgqd.ini read as is.
//!
//! Precedence: built-in defaults (pgqd's), then the config file, then flags. Databases come from
//! `--db` (repeatable), the config file (`database_list` on `base_connstr`, discovery from
//! `initial_database`, or TOML `databases` URLs), else `DATABASE_URL`, else libpq's `PG*`
//! variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, ...).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgq_core::connect::ConnectTarget;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The `application_name` the ticker's sessions use (also how another ticker recognises them).
pub const APPLICATION_NAME: &str = "pgq-ticker";

/// Command-line arguments of the `pgq-ticker` binary.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "pgq-ticker",
    version,
    about = "Ticker and maintenance daemon for PgQ (a pgqd replacement)",
    long_about = "Ticks every PgQ queue, runs rotation, vacuum and retry maintenance, on one or \
                  many databases. Reads pgqd.ini as is, or a TOML file. SIGHUP reloads the \
                  configuration; SIGTERM/SIGINT stop cleanly.\n\nDurations are seconds (`0.5`) \
                  or humantime (`500ms`, `2m`)."
)]
pub struct Args {
    /// Config file: a pgqd.ini (with a `[pgqd]` section, read as is) or a TOML file.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// A database to tick (URL or libpq "key=value" string); repeat for several.
    #[arg(long = "db", value_name = "URL")]
    pub db: Vec<String>,
    /// Tick every database with pgq on the server of --db/DATABASE_URL/PG* (found through that
    /// database), like pgqd without database_list.
    #[arg(long)]
    pub discover: bool,
    /// How often to run the ticker (pgqd: ticker_period; default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub ticker_period: Option<Duration>,
    /// How often to move due retry events back (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub retry_period: Option<Duration>,
    /// How often to run maintenance: rotation, vacuum (default 120s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub maint_period: Option<Duration>,
    /// How often to look for new or dropped databases (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub check_period: Option<Duration>,
    /// How often to log the stats line and refresh queue metrics (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub stats_period: Option<Duration>,
    /// Reconnect sessions older than this (default 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub connection_lifetime: Option<Duration>,
    /// How often queues with ticker_max_lag = 0 are checked for new events (default 2ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub fast_poll: Option<Duration>,
    /// Serve Prometheus /metrics and /health on this address (e.g. 127.0.0.1:9187; `:9187` is
    /// 127.0.0.1:9187, give 0.0.0.0:9187 for every interface).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Write the process id to this file (refused when it names a running process).
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Exit with a non-zero status when a database stays unreachable this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub exit_after_failure: Option<Duration>,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log only warnings and errors.
    #[arg(short, long)]
    pub quiet: bool,
}

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

/// A duration in a file: seconds as a number, or a string (`"0.5"`, `"500ms"`, `"2m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Secs(f64),
    Text(String),
}

/// A list in a file: a TOML array, or pgqd's comma/space separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileList {
    List(Vec<String>),
    Text(String),
}

impl FileList {
    fn items(&self) -> Vec<String> {
        match self {
            FileList::List(v) => v.iter().map(|s| s.trim().to_owned()).collect(),
            FileList::Text(s) => split_word_list(s),
        }
    }
}

/// One server section of a TOML file (`[[servers]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    base_connstr: Option<String>,
    initial_database: Option<String>,
    database_list: Option<FileList>,
}

/// Everything a config file can say (pgqd.ini keys, and TOML extras).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(flatten)]
    server: FileServer,
    servers: Option<Vec<FileServer>>,
    databases: Option<FileList>,
    ticker_period: Option<FileDuration>,
    retry_period: Option<FileDuration>,
    maint_period: Option<FileDuration>,
    check_period: Option<FileDuration>,
    stats_period: Option<FileDuration>,
    connection_lifetime: Option<FileDuration>,
    fast_poll: Option<FileDuration>,
    tick_statement_timeout: Option<FileDuration>,
    maint_statement_timeout: Option<FileDuration>,
    exit_after_failure: Option<FileDuration>,
    pidfile: Option<String>,
    logfile: Option<String>,
    log_format: Option<LogFormat>,
    http: Option<String>,
    syslog: Option<toml::Value>,
    syslog_ident: Option<String>,
    syslog_facility: Option<String>,
    /// Read from a pgqd.ini: no database keys means "discover on the default server", as in pgqd.
    #[serde(skip)]
    pgqd_ini: bool,
}

/// The keys of pgqd's `[pgqd]` section (all accepted, with pgqd's meaning).
pub const PGQD_INI_KEYS: &[&str] = &[
    "logfile",
    "pidfile",
    "initial_database",
    "base_connstr",
    "database_list",
    "syslog",
    "syslog_ident",
    "syslog_facility",
    "check_period",
    "maint_period",
    "retry_period",
    "ticker_period",
    "stats_period",
    "connection_lifetime",
];

/// Keys of old skytools-style configs that pgqd ignores; accepted and ignored.
const IGNORED_INI_KEYS: &[&str] = &["job_name", "script", "verbose"];

impl Config {
    /// Build the configuration from command-line arguments: read the config file they name (if
    /// any), apply flags, resolve databases (falling back to `DATABASE_URL`, then `PG*`
    /// variables) and validate everything.
    pub fn from_args(args: &Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => Some(read_config_file(path)?),
            None => None,
        };
        let mut cfg = Config::default();
        let origin = args.config.as_ref().map(|p| p.display().to_string());
        if let Some(file) = &file {
            apply_file(&mut cfg, file, origin.as_deref())?;
        }
        apply_args(&mut cfg, args)?;
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

fn read_config_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("could not read config file {}", path.display()),
        source,
    })?;
    let origin = path.display().to_string();
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if !is_toml && looks_like_ini(&text) {
        parse_pgqd_ini(&text, &origin)
    } else {
        toml::from_str(&text).map_err(|e| Error::config(Some(origin), toml_error(&text, &e)))
    }
}

/// A TOML error as "line L, column C (key): message", without the source line toml quotes (it may
/// hold a connection string's password), and with passwords in the file masked.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.message().trim_end().to_owned();
    for secret in pgq_core::redact::passwords_in(text) {
        msg = msg.replace(&secret, "***");
    }
    for (untagged, expected) in [
        (
            "FileDuration",
            "expected a duration: seconds (0.5) or a string (\"500ms\", \"2m\")",
        ),
        (
            "FileList",
            "expected a list of strings, or one comma-separated string",
        ),
    ] {
        if msg.contains(&format!("untagged enum {untagged}")) {
            msg = expected.to_owned();
        }
    }
    // toml places errors about the document as a whole (an unknown key, with flattened
    // sections) at its start, where a location says nothing.
    let Some(span) = e.span().filter(|s| s.start > 0) else {
        return msg;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - line_start + 1;
    // Name the key of that line (never its value).
    let key = text[line_start..]
        .lines()
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
    match key {
        Some(key) => format!("line {line}, column {column} ({key}): {msg}"),
        None => format!("line {line}, column {column}: {msg}"),
    }
}

fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l.starts_with('[') && !l.starts_with("[["))
}

/// Parse a pgqd.ini: a `[pgqd]` section of `key = value` lines (`#` and `;` start comments).
/// Every key pgqd knows is accepted with the same meaning; unknown keys and other sections are
/// errors, as in pgqd.
pub fn parse_pgqd_ini_keys(text: &str, origin: &str) -> Result<BTreeMap<String, String>> {
    let mut section: Option<String> = None;
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let at = || Some(format!("{origin}:{}", i + 1));
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| Error::config(at(), format!("bad section header {line:?}")))?
                .trim();
            if name != "pgqd" {
                return Err(Error::config(
                    at(),
                    format!("unknown section [{name}]: a pgqd.ini has only [pgqd]"),
                ));
            }
            section = Some(name.to_owned());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::config(
                at(),
                format!("expected `key = value`, got {line:?}"),
            ));
        };
        if section.is_none() {
            return Err(Error::config(at(), "setting outside the [pgqd] section"));
        }
        let key = key.trim().to_ascii_lowercase();
        if !PGQD_INI_KEYS.contains(&key.as_str()) && !IGNORED_INI_KEYS.contains(&key.as_str()) {
            return Err(Error::config(
                at(),
                format!(
                    "unknown key {key:?}; pgqd.ini keys are: {}",
                    PGQD_INI_KEYS.join(", ")
                ),
            ));
        }
        out.insert(key, value.trim().to_owned());
    }
    if section.is_none() {
        return Err(Error::config(Some(origin.to_owned()), "no [pgqd] section"));
    }
    Ok(out)
}

fn parse_pgqd_ini(text: &str, origin: &str) -> Result<FileConfig> {
    let keys = parse_pgqd_ini_keys(text, origin)?;
    let mut f = FileConfig {
        pgqd_ini: true,
        ..FileConfig::default()
    };
    for (key, value) in keys {
        let dur = || Some(FileDuration::Text(value.clone()));
        let text = || Some(value.clone());
        match key.as_str() {
            "logfile" => f.logfile = text().filter(|v| !v.is_empty()),
            "pidfile" => f.pidfile = text().filter(|v| !v.is_empty()),
            "initial_database" => f.server.initial_database = text(),
            "base_connstr" => f.server.base_connstr = text(),
            "database_list" => f.server.database_list = Some(FileList::Text(value.clone())),
            "syslog" => f.syslog = Some(toml::Value::String(value.clone())),
            "syslog_ident" => f.syslog_ident = text(),
            "syslog_facility" => f.syslog_facility = text(),
            "check_period" => f.check_period = dur(),
            "maint_period" => f.maint_period = dur(),
            "retry_period" => f.retry_period = dur(),
            "ticker_period" => f.ticker_period = dur(),
            "stats_period" => f.stats_period = dur(),
            "connection_lifetime" => f.connection_lifetime = dur(),
            _ => {} // accepted, ignored (IGNORED_INI_KEYS)
        }
    }
    Ok(f)
}

fn apply_file(cfg: &mut Config, f: &FileConfig, origin: Option<&str>) -> Result<()> {
    let at = |key: &str| {
        Some(format!(
            "{}{key}",
            origin.map(|o| format!("{o}: ")).unwrap_or_default()
        ))
    };
    let dur = |key: &str, v: &Option<FileDuration>| -> Result<Option<Duration>> {
        match v {
            None => Ok(None),
            Some(FileDuration::Secs(s)) => {
                secs(*s).map(Some).map_err(|m| Error::config(at(key), m))
            }
            Some(FileDuration::Text(t)) => parse_duration(t)
                .map(Some)
                .map_err(|m| Error::config(at(key), m)),
        }
    };
    let p = &mut cfg.periods;
    let set = |slot: &mut Duration, v: Option<Duration>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut p.ticker, dur("ticker_period", &f.ticker_period)?);
    set(&mut p.retry, dur("retry_period", &f.retry_period)?);
    set(&mut p.maint, dur("maint_period", &f.maint_period)?);
    set(&mut p.check, dur("check_period", &f.check_period)?);
    set(&mut p.stats, dur("stats_period", &f.stats_period)?);
    set(
        &mut p.connection_lifetime,
        dur("connection_lifetime", &f.connection_lifetime)?,
    );
    set(&mut p.fast_poll, dur("fast_poll", &f.fast_poll)?);
    set(
        &mut cfg.tick_statement_timeout,
        dur("tick_statement_timeout", &f.tick_statement_timeout)?,
    );
    set(
        &mut cfg.maint_statement_timeout,
        dur("maint_statement_timeout", &f.maint_statement_timeout)?,
    );
    if let Some(d) = dur("exit_after_failure", &f.exit_after_failure)? {
        cfg.exit_after_failure = Some(d);
    }
    if let Some(p) = &f.pidfile {
        cfg.pidfile = Some(expand_home(p));
    }
    if let Some(p) = &f.logfile {
        cfg.logfile = Some(expand_home(p));
    }
    if let Some(fmt) = f.log_format {
        cfg.log_format = fmt;
    }
    if let Some(h) = &f.http {
        cfg.http = Some(parse_addr(h).map_err(|m| Error::config(at("http"), m))?);
    }
    if let Some(v) = &f.syslog {
        let on = match v {
            toml::Value::Boolean(b) => *b,
            toml::Value::Integer(i) => *i != 0,
            toml::Value::String(s) => match s.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                other => {
                    return Err(Error::config(
                        at("syslog"),
                        format!("syslog must be 0 or 1, got {other:?}"),
                    ));
                }
            },
            other => {
                return Err(Error::config(
                    at("syslog"),
                    format!("syslog must be 0 or 1, got {other}"),
                ));
            }
        };
        if on {
            cfg.notes.push(
                "syslog = 1 is not supported: logs go to the log file or stderr \
                 (under systemd, stderr goes to the journal)"
                    .to_owned(),
            );
        }
    }
    let mut servers: Vec<&FileServer> = Vec::new();
    let top = &f.server;
    if f.pgqd_ini
        || top.base_connstr.is_some()
        || top.initial_database.is_some()
        || top.database_list.is_some()
    {
        servers.push(top);
    }
    servers.extend(f.servers.iter().flatten());
    for s in servers {
        let base = parse_target(s.base_connstr.as_deref().unwrap_or(""))
            .map_err(|m| Error::config(at("base_connstr"), m))?;
        let keepalives = base.keepalives();
        let list = s
            .database_list
            .as_ref()
            .map(FileList::items)
            .unwrap_or_default();
        if list.is_empty() {
            cfg.discover.push(Discovery {
                initial_database: s
                    .initial_database
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "template1".to_owned()),
                base,
                keepalives,
            });
        } else {
            for name in list {
                cfg.databases
                    .push(database_entry(base.with_database(&name)));
            }
        }
    }
    let databases = match &f.databases {
        None => Vec::new(),
        Some(FileList::List(v)) => v.clone(),
        Some(FileList::Text(_)) => {
            return Err(Error::config(
                at("databases"),
                "databases must be a list of connection strings: databases = [\"...\"] \
                 (the value is not shown: it may hold a password)",
            ));
        }
    };
    for url in &databases {
        let target = parse_target(url).map_err(|m| Error::config(at("databases"), m))?;
        cfg.databases.push(database_entry(target));
    }
    Ok(())
}

fn apply_args(cfg: &mut Config, a: &Args) -> Result<()> {
    let p = &mut cfg.periods;
    for (slot, v) in [
        (&mut p.ticker, a.ticker_period),
        (&mut p.retry, a.retry_period),
        (&mut p.maint, a.maint_period),
        (&mut p.check, a.check_period),
        (&mut p.stats, a.stats_period),
        (&mut p.connection_lifetime, a.connection_lifetime),
        (&mut p.fast_poll, a.fast_poll),
    ] {
        if let Some(v) = v {
            *slot = v;
        }
    }
    if let Some(d) = a.exit_after_failure {
        cfg.exit_after_failure = Some(d);
    }
    if let Some(h) = &a.http {
        cfg.http = Some(parse_addr(h).map_err(|m| Error::config(Some("--http".into()), m))?);
    }
    if let Some(f) = a.log_format {
        cfg.log_format = f;
    }
    if let Some(p) = &a.logfile {
        cfg.logfile = Some(p.clone());
    }
    if let Some(p) = &a.pidfile {
        cfg.pidfile = Some(p.clone());
    }
    for url in &a.db {
        let target = parse_target(url).map_err(|m| Error::config(Some("--db".into()), m))?;
        if a.discover {
            cfg.discover.push(discovery_from(target));
        } else {
            cfg.databases.push(database_entry(target));
        }
    }
    Ok(())
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
/// defaults to [`APPLICATION_NAME`]; the connect timeout to 10 s.
pub fn parse_target(s: &str) -> std::result::Result<ConnectTarget, String> {
    ConnectTarget::parse(s)
        .map(|t| {
            t.with_default_application_name(APPLICATION_NAME)
                .with_default_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        })
        .map_err(|e| e.to_string())
}

/// The per-host connect timeout when `connect_timeout` / `PGCONNECT_TIMEOUT` give none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// pgqd's `database_list`: names separated by commas and/or spaces.
fn split_word_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
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

fn secs(s: f64) -> std::result::Result<Duration, String> {
    parse_duration(&s.to_string())
}

/// Parse a duration: [`pgq_core::duration::parse_duration`] (`500ms`, `2m`, or seconds as in
/// pgqd.ini: `1`, `0.01`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    pgq_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_duration_arg(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s)
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

    #[test]
    fn toml_errors_show_no_password() {
        for text in [
            "databases = [\"postgres://u:Secret-1@h/db\" x]\n",
            "databases = \"postgres://u:Secret-1@h/db\"\n",
            "databases = \"host=h password=Secret-1\"\n",
            "databases = \"host=h password='Secret-1' dbname=x\"\n",
            "databases = [\"postgres://u:Sec/ret-1@h/db\", 3]\n",
            "databases = [\"postgres://u:Sec/ret-1@h/db\"]\nbogus = 1\n",
        ] {
            // A TOML error, or (a string where a list belongs) a configuration error.
            let msg = match toml::from_str::<FileConfig>(text) {
                Err(e) => toml_error(text, &e),
                Ok(f) => apply_file(&mut Config::default(), &f, Some("x.toml"))
                    .unwrap_err()
                    .to_string(),
            };
            assert!(
                !msg.contains("Secret-1") && !msg.contains("Sec/ret-1"),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn word_list() {
        assert_eq!(split_word_list("a, b  c,d"), vec!["a", "b", "c", "d"]);
    }
}
