//! Config files: TOML (with pgqd.ini's keys, and more), and what a file says applied to the
//! configuration. A pgqd.ini is read into the same [`FileConfig`] by [`super::pgqd_ini`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::pgqd_ini::{looks_like_ini, parse_pgqd_ini};
use super::{
    Config, Discovery, LogFormat, database_entry, parse_addr, parse_duration, parse_target,
};
use crate::error::{Error, Result};

/// A duration in a file: seconds as a number, or a string (`"0.5"`, `"500ms"`, `"2m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum FileDuration {
    Secs(f64),
    Text(String),
}

/// A list in a file: a TOML array, or pgqd's comma/space separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum FileList {
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
pub(super) struct FileServer {
    pub(super) base_connstr: Option<String>,
    pub(super) initial_database: Option<String>,
    pub(super) database_list: Option<FileList>,
}

/// Everything a config file can say (pgqd.ini keys, and TOML extras).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(flatten)]
    pub(super) server: FileServer,
    pub(super) servers: Option<Vec<FileServer>>,
    pub(super) databases: Option<FileList>,
    pub(super) ticker_period: Option<FileDuration>,
    pub(super) retry_period: Option<FileDuration>,
    pub(super) maint_period: Option<FileDuration>,
    pub(super) check_period: Option<FileDuration>,
    pub(super) stats_period: Option<FileDuration>,
    pub(super) connection_lifetime: Option<FileDuration>,
    pub(super) fast_poll: Option<FileDuration>,
    pub(super) tick_statement_timeout: Option<FileDuration>,
    pub(super) maint_statement_timeout: Option<FileDuration>,
    pub(super) exit_after_failure: Option<FileDuration>,
    pub(super) pidfile: Option<String>,
    pub(super) logfile: Option<String>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) http: Option<String>,
    pub(super) syslog: Option<toml::Value>,
    pub(super) syslog_ident: Option<String>,
    pub(super) syslog_facility: Option<String>,
    /// Read from a pgqd.ini: no database keys means "discover on the default server", as in pgqd.
    #[serde(skip)]
    pub(super) pgqd_ini: bool,
}

pub(super) fn read_config_file(path: &Path) -> Result<FileConfig> {
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

pub(super) fn apply_file(cfg: &mut Config, f: &FileConfig, origin: Option<&str>) -> Result<()> {
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

/// pgqd's `database_list`: names separated by commas and/or spaces.
pub(super) fn split_word_list(s: &str) -> Vec<String> {
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

fn secs(s: f64) -> std::result::Result<Duration, String> {
    parse_duration(&s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
