//! `PGQ_TEST_DATABASE_URL`: an external server used instead of a private cluster.

use crate::Error;

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `PGQ_TEST_DATABASE_URL`, split so that the database and the user can be replaced.
pub(crate) struct ExternalUrl {
    scheme: String,
    pub(super) userinfo: Option<String>,
    pub(super) host_port: String,
    pub(super) port: u16,
    /// `?...` or empty.
    query: String,
}

impl ExternalUrl {
    pub(super) fn parse(url: &str) -> Result<ExternalUrl, Error> {
        let bad = |reason| Error::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected postgres://user@host:port/db"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let (rest, query) = match rest.find('?') {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, String::new()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h.to_owned()),
            None => (None, authority.to_owned()),
        };
        let port = match host_port.rsplit_once(':') {
            Some((_, port)) if !host_port.ends_with(']') => {
                port.parse().map_err(|_| bad("the port is not a number"))?
            }
            _ => 5432,
        };
        Ok(ExternalUrl {
            scheme: scheme.to_owned(),
            userinfo,
            host_port,
            port,
            query,
        })
    }

    pub(super) fn with(&self, userinfo: Option<&str>, db: &str) -> String {
        let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!(
            "{}://{user}{}/{}{}",
            self.scheme,
            self.host_port,
            encode(db),
            self.query
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_urls() {
        let u =
            ExternalUrl::parse("postgres://admin:s%40cret@db.example:6543/main?sslmode=disable")
                .unwrap();
        assert_eq!(u.port, 6543);
        assert_eq!(
            u.with(u.userinfo.as_deref(), "t_1"),
            "postgres://admin:s%40cret@db.example:6543/t_1?sslmode=disable"
        );
        assert_eq!(
            u.with(Some("bob"), "x y"),
            "postgres://bob@db.example:6543/x%20y?sslmode=disable"
        );
        let u = ExternalUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(u.port, 5432);
        assert_eq!(u.with(None, "d"), "postgresql://localhost/d");
        let u = ExternalUrl::parse("postgres://u@[::1]:5999/").unwrap();
        assert_eq!(u.port, 5999);
        assert_eq!(ExternalUrl::parse("postgres://[::1]/x").unwrap().port, 5432);
        assert!(ExternalUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("pgq_reader"), "pgq_reader");
        assert_eq!(encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }
}
