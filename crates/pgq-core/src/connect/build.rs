//! Building a [`ConnectTarget`] from libpq parameters: the service file, the environment and
//! the defaults filled in, values checked, one [`PgConnectOptions`] per host.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{ConnectError, ConnectTarget, TargetSessionAttrs, params};
use crate::session::Keepalives;

/// Read the environment and the defaults into `p`, and build the target.
pub(super) fn build(mut p: params::Params) -> Result<ConnectTarget, ConnectError> {
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
