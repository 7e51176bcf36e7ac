//! Where to connect: `--db`, `DATABASE_URL`, or the libpq `PG*` variables; the connect timeout;
//! and keeping passwords out of every message.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use pgq_core::sqlx::postgres::{PgConnectOptions, PgConnection};
use pgq_core::sqlx::{ConnectOptions, Connection};

use crate::error::CliError;

/// Used when neither `--connect-timeout` nor `PGCONNECT_TIMEOUT` says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Secrets seen while resolving the target; [`redact`] removes them from anything printed.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember_secret(s: &str) {
    // Very short strings would mangle ordinary text; messages never contain a password by
    // construction, this is the second line of defence.
    if s.len() >= 3
        && let Ok(mut v) = SECRETS.lock()
        && !v.iter().any(|x| x == s)
    {
        v.push(s.to_owned());
    }
}

/// Replace every known secret in `text` with `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    if let Ok(v) = SECRETS.lock() {
        for s in v.iter() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// Decode `%XX` escapes (lossy), as URLs carry passwords.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Record the passwords a URL carries (in its user info, or as a `password=` parameter).
fn remember_url_secrets(url: &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, pw)) = userinfo.split_once(':')
    {
        remember_secret(pw);
        remember_secret(&percent_decode(pw));
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && (k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword"))
            {
                remember_secret(v);
                remember_secret(&percent_decode(v));
            }
        }
    }
}

/// The database to talk to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    options: PgConnectOptions,
    timeout: Duration,
    /// The server-side keepalives of the session (the URL's libpq `keepalives*` parameters).
    keepalives: pgq_core::Keepalives,
}

impl Target {
    /// Resolve the target from `--db`, else `DATABASE_URL`, else the `PG*` variables.
    pub(crate) fn resolve(db: Option<&str>, timeout: Option<Duration>) -> Result<Target, CliError> {
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            remember_secret(&pw);
        }
        let env_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        let (url, from) = match (db, env_url.as_deref()) {
            (Some(u), _) => (Some(u), "--db"),
            (None, Some(u)) => (Some(u), "DATABASE_URL"),
            (None, None) => (None, "the PG* variables"),
        };
        let keepalives = match url {
            Some(u) => pgq_core::Keepalives::from_connstr(u).map_err(|e| CliError::Connect {
                message: format!(
                    "the database URL from {from} is not valid: {}",
                    redact(&e.to_string())
                ),
            })?,
            None => pgq_core::Keepalives::default(),
        };
        let options = match url {
            Some(u) => {
                remember_url_secrets(u);
                PgConnectOptions::from_str(u).map_err(|e| CliError::Connect {
                    message: format!(
                        "the database URL from {from} is not valid ({}): write it like \
                         postgres://user@host:5432/dbname",
                        redact(&e.to_string())
                    ),
                })?
            }
            None => PgConnectOptions::new(),
        };
        let timeout = timeout
            .or_else(|| {
                std::env::var("PGCONNECT_TIMEOUT")
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs)
            })
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        Ok(Target {
            options: options
                .application_name("pgq-cli")
                .disable_statement_logging(),
            timeout,
            keepalives,
        })
    }

    /// The connection options.
    pub(crate) fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// `user@host:port/db`, never with a password.
    pub(crate) fn describe(&self) -> String {
        let o = &self.options;
        let place = match o.get_socket() {
            Some(dir) => format!("{}:{}", dir.display(), o.get_port()),
            None => format!("{}:{}", o.get_host(), o.get_port()),
        };
        format!(
            "{}@{place}/{}",
            o.get_username(),
            o.get_database().unwrap_or(o.get_username())
        )
    }

    /// Connect, giving up after the connect timeout. The session gets server-side TCP
    /// keepalives ([`pgq_core::configure_session`]; the URL's libpq `keepalives*` parameters
    /// size them), so the server ends it when the client's network is gone.
    pub(crate) async fn connect(&self) -> Result<PgConnection, CliError> {
        let hint = "check --db, DATABASE_URL or the PG* variables, and that the server is running";
        let settings = pgq_core::SessionSettings {
            keepalives: self.keepalives,
            idle_session_timeout: None,
        };
        let session = async {
            let mut conn = PgConnection::connect_with(&self.options).await?;
            if let Err(e) = pgq_core::configure_session(&mut conn, &settings).await {
                let _ = conn.close().await;
                return Err(pgq_core::sqlx::Error::Configuration(e.into()));
            }
            Ok(conn)
        };
        match tokio::time::timeout(self.timeout, session).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(CliError::Connect {
                message: format!(
                    "could not connect to {}: {}: {hint}",
                    self.describe(),
                    redact(&e.to_string())
                ),
            }),
            Err(_) => Err(CliError::Connect {
                message: format!(
                    "could not connect to {}: no answer within {} (--connect-timeout): {hint}",
                    self.describe(),
                    humantime::format_duration(self.timeout)
                ),
            }),
        }
    }
}

/// Close a connection politely (errors do not matter any more), unless that takes more than a
/// moment (a half-open connection never answers): then drop it.
pub(crate) async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        remember_url_secrets("postgres://me:s%40cret-pw@host:5/db?password=other-pw");
        let msg = redact("a s@cret-pw b s%40cret-pw c other-pw");
        assert_eq!(msg, "a *** b *** c ***");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
