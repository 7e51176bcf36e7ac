//! Reading libpq connection settings: connection strings (URL and `key=value`), the `PG*`
//! environment variables, service files and password files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::redact::{percent_decode, remember_connstr_secrets, remember_secret};

/// Connection parameters by libpq keyword.
pub(crate) type Params = BTreeMap<String, String>;

/// Keywords PgQ for Rust acts on.
const SUPPORTED: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "service",
    "target_session_attrs",
    "client_encoding",
    "load_balance_hosts",
];

/// libpq keywords accepted without effect: they tune things sqlx does its own way, or select
/// what is the only behaviour here anyway (the value is checked where that matters).
const ACCEPTED: &[&str] = &[
    "tcp_user_timeout",
    "sslcompression",
    "sslsni",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "channel_binding",
    "requirepeer",
];

/// The environment variable of each keyword (libpq's list, as far as it is supported).
pub(crate) const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("gssencmode", "PGGSSENCMODE"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
];

fn check_key(key: &str) -> Result<(), String> {
    if SUPPORTED.contains(&key) || ACCEPTED.contains(&key) {
        Ok(())
    } else {
        Err(format!("unsupported connection parameter {key:?}"))
    }
}

/// Whether `s` is a `postgres://` / `postgresql://` URL.
pub(crate) fn is_url(s: &str) -> bool {
    let s = s.trim_start();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The parameters of a connection string: a URL or a libpq `key=value` string. Every password
/// in it is registered for redaction first, whether or not it parses.
pub(crate) fn parse_connstr(s: &str) -> Result<Params, String> {
    remember_connstr_secrets(s);
    let pairs = if is_url(s) {
        parse_url(s.trim())?
    } else {
        parse_keywords(s)?
    };
    let mut out = Params::new();
    for (k, v) in pairs {
        check_key(&k)?;
        if k == "password" {
            remember_secret(&v);
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The `key=value` pairs of a connection string without checking the keywords (for
/// [`Keepalives::from_connstr`](crate::Keepalives::from_connstr)).
pub(crate) fn connstr_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    if is_url(s) {
        parse_url(s.trim())
    } else {
        parse_keywords(s)
    }
}

/// `postgres://[user[:password]@][host[:port][,host[:port]...]][/dbname][?key=value&...]`.
fn parse_url(s: &str) -> Result<Vec<(String, String)>, String> {
    let rest = s
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or("not a postgres:// URL")?;
    let rest = rest.split('#').next().unwrap_or_default();
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let mut out = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_owned(), percent_decode(user)));
            }
            if let Some(pw) = pw {
                out.push(("password".to_owned(), percent_decode(pw)));
            }
            hosts
        }
        None => {
            if (path.contains('@') || query.contains('@')) && authority.contains(':') {
                return Err(
                    "the URL's password seems to hold an unencoded '/', '?' or '#': \
                            percent-encode them (%2F, %3F, %23)"
                        .to_owned(),
                );
            }
            authority
        }
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostspec.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("bad IPv6 address in URL host {spec:?}"))?;
                (h, after.strip_prefix(':').unwrap_or(""))
            } else {
                spec.split_once(':').unwrap_or((spec, ""))
            };
            hosts.push(percent_decode(host));
            ports.push(port.to_owned());
        }
        out.push(("host".to_owned(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".to_owned(), ports.join(",")));
        }
    }
    if !path.is_empty() {
        out.push(("dbname".to_owned(), percent_decode(path)));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("URL parameter {pair:?} has no value"))?;
        let (k, v) = (percent_decode(k), percent_decode(&v.replace('+', " ")));
        // libpq's JDBC-style `ssl=true`.
        if k == "ssl" && v == "true" {
            out.push(("sslmode".to_owned(), "require".to_owned()));
        } else {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// A libpq keyword string: `key=value` pairs separated by whitespace; values may be
/// single-quoted, with `\'` and `\\` escapes.
fn parse_keywords(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "expected `=` after {key:?} in the connection string (write key=value pairs, \
                 or a postgres:// URL)"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\\') => value.push(chars.next().ok_or("dangling backslash")?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or("dangling backslash")?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key.to_ascii_lowercase(), value));
    }
}

/// The value of environment variable `name`, unless unset or empty (libpq treats an empty
/// value as its default).
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Fill what `params` lacks from service `name` (in `PGSERVICEFILE` or `~/.pg_service.conf`,
/// then `PGSYSCONFDIR/pg_service.conf`).
pub(crate) fn apply_service(params: &mut Params, name: &str) -> Result<(), String> {
    let mut files: Vec<PathBuf> = Vec::new();
    match env("PGSERVICEFILE") {
        Some(f) => files.push(f.into()),
        None => files.extend(home().map(|h| h.join(".pg_service.conf"))),
    }
    files.push(
        PathBuf::from(env("PGSYSCONFDIR").unwrap_or_else(|| "/etc/postgresql-common".into()))
            .join("pg_service.conf"),
    );
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(section) = service_section(&text, name, file)? {
            for (k, v) in section {
                check_key(&k).map_err(|e| format!("{}: {e}", file.display()))?;
                if k == "service" {
                    return Err(format!(
                        "{}: nested service specifications are not supported",
                        file.display()
                    ));
                }
                if k == "password" {
                    remember_secret(&v);
                }
                params.entry(k).or_insert(v);
            }
            return Ok(());
        }
    }
    Err(format!(
        "definition of service {name:?} not found (looked in {})",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The `key=value` lines of section `[name]` of a service file, if it has one.
fn service_section(
    text: &str,
    name: &str,
    file: &Path,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut current: Option<&str> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            let section = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{}:{}: bad section header", file.display(), i + 1))?;
            current = Some(section.trim());
            if current == Some(name) {
                found = Some(Vec::new());
            }
            continue;
        }
        if current == Some(name) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{}:{}: expected key=value", file.display(), i + 1))?;
            if let Some(f) = found.as_mut() {
                f.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
    }
    Ok(found)
}

fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// The password file: `passfile`, else `PGPASSFILE` (already in `params`), else `~/.pgpass`.
pub(crate) fn passfile(params: &Params) -> Option<PathBuf> {
    match params.get("passfile") {
        Some(f) => Some(PathBuf::from(f)),
        None => home().map(|h| h.join(".pgpass")),
    }
}

/// The password for `host:port:dbname:user` in password file `file` (libpq's rules: `*` matches
/// anything, `\` escapes `:` and `\`, the first matching line wins; `localhost` matches a
/// connection through the default socket directory; a file others may read is ignored).
pub(crate) fn pgpass_lookup(
    file: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or \
             less: ignored",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], host)
            && ok(&fields[1], &port)
            && ok(&fields[2], dbname)
            && ok(&fields[3], user)
        {
            let pw = fields[4..].join(":");
            remember_secret(&pw);
            return Some(pw);
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Split a libpq list value (`host=a,b`, `port=5432,5433`).
pub(crate) fn list(v: Option<&String>) -> Vec<String> {
    v.map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// The `-c name=value` settings of libpq's `options`.
pub(crate) fn pg_options(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut words = s.split_whitespace();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next().ok_or("options: -c without a setting")?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest
        } else if let Some(rest) = w.strip_prefix("--") {
            rest
        } else {
            return Err(format!(
                "options: only -c name=value is supported, got {w:?}"
            ));
        };
        let (k, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("options: expected name=value, got {setting:?}"))?;
        out.push((k.replace('-', "_"), v.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = parse_connstr("postgres://u:p%2Fw@a:5432,b:5433,[::1]/my%20db?target_session_attrs=read-write&ssl=true").unwrap();
        assert_eq!(p["user"], "u");
        assert_eq!(p["password"], "p/w");
        assert_eq!(p["host"], "a,b,::1");
        assert_eq!(p["port"], "5432,5433,");
        assert_eq!(p["dbname"], "my db");
        assert_eq!(p["target_session_attrs"], "read-write");
        assert_eq!(p["sslmode"], "require");
        let p = parse_connstr("postgresql://").unwrap();
        assert!(p.is_empty());
        let e = parse_connstr("postgres://u:pa/ss@h/db").unwrap_err();
        assert!(e.contains("percent-encode") && !e.contains("pa/ss"), "{e}");
        assert!(parse_connstr("postgres://h/db?bogus=1").is_err());
    }

    #[test]
    fn keywords() {
        let p = parse_connstr(r"host=db1 port = 6543 user='pgq admin' password='it\'s' dbname=x")
            .unwrap();
        assert_eq!(p["host"], "db1");
        assert_eq!(p["port"], "6543");
        assert_eq!(p["user"], "pgq admin");
        assert_eq!(p["password"], "it's");
        assert!(parse_connstr("host").is_err());
        assert!(parse_connstr("bogus=1").is_err());
        assert!(parse_connstr("user='x").is_err());
    }

    #[test]
    fn pgpass_lines() {
        assert_eq!(
            split_pgpass_line(r"h\:x:5432:*:u:pa:ss\\"),
            vec!["h:x", "5432", "*", "u", r"pa:ss\"]
        );
    }

    #[test]
    fn options() {
        assert_eq!(
            pg_options("-c statement_timeout=5s --lock-timeout=1s").unwrap(),
            vec![
                ("statement_timeout".into(), "5s".into()),
                ("lock_timeout".into(), "1s".into())
            ]
        );
        assert!(pg_options("-x").is_err());
    }
}

#[cfg(test)]
mod pgpass_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn pgpass_lookup_follows_libpq() {
        let dir = std::env::temp_dir().join(format!("pgq-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\ndb1:5432:app:pgq:first-pw\n*:*:*:pgq:any-pw\nlocalhost:6000:*:*:sock\\:pw\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let look = |h, p, d, u| pgpass_lookup(&file, h, p, d, u);
        assert_eq!(look("db1", 5432, "app", "pgq").as_deref(), Some("first-pw"));
        assert_eq!(look("db2", 5433, "x", "pgq").as_deref(), Some("any-pw"));
        // A socket directory matches `localhost`.
        assert_eq!(
            look("/run/postgresql", 6000, "x", "bob").as_deref(),
            Some("sock:pw")
        );
        assert_eq!(look("db2", 5433, "x", "bob"), None);
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(look("db1", 5432, "app", "pgq"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
