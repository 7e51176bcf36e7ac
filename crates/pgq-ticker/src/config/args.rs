//! The command-line flags of the `pgq-ticker` binary, applied over the config file.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    Config, LogFormat, database_entry, discovery_from, parse_addr, parse_duration, parse_target,
};
use crate::error::{Error, Result};

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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ticker_period: Option<Duration>,
    /// How often to move due retry events back (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_period: Option<Duration>,
    /// How often to run maintenance: rotation, vacuum (default 120s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub maint_period: Option<Duration>,
    /// How often to look for new or dropped databases (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub check_period: Option<Duration>,
    /// How often to log the stats line and refresh queue metrics (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stats_period: Option<Duration>,
    /// Reconnect sessions older than this (default 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connection_lifetime: Option<Duration>,
    /// How often queues with ticker_max_lag = 0 are checked for new events (default 2ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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

pub(super) fn apply_args(cfg: &mut Config, a: &Args) -> Result<()> {
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
