//! pgqd.ini, read as is: pgqd's `[pgqd]` section and every key of it, with pgqd's meaning.

use std::collections::BTreeMap;

use super::file::{FileConfig, FileDuration, FileList};
use crate::error::{Error, Result};

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

pub(super) fn looks_like_ini(text: &str) -> bool {
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

pub(super) fn parse_pgqd_ini(text: &str, origin: &str) -> Result<FileConfig> {
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
