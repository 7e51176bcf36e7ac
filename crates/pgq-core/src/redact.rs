//! Keeping passwords out of everything printed: one registry of the secrets seen while reading
//! connection settings, and [`redact`] to mask them in any text before it is shown.
//!
//! [`ConnectTarget`](crate::connect::ConnectTarget) registers every password it reads (from a
//! connection string, `PGPASSWORD`, a service file or a password file); programs pass their
//! messages through [`redact`] before they print them. [`remember_connstr_secrets`] also handles
//! strings that cannot be parsed (a URL whose password holds an unencoded `/`, `?` or `@`), and
//! [`passwords_in`] finds passwords in arbitrary text, such as a configuration file an error
//! message quotes.
//!
//! ```
//! pgq_core::redact::remember_connstr_secrets("postgres://app:pa/ss?word@db1/app");
//! assert_eq!(pgq_core::redact::redact("auth failed for pa/ss?word"), "auth failed for ***");
//! ```

use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Register `secret` (and its percent-decoded form) so that [`redact`] masks it. Strings shorter
/// than 3 characters are not registered: masking them would mangle ordinary text (messages never
/// contain a password by construction; this is the second line of defence).
pub fn remember_secret(secret: &str) {
    for s in [secret.to_owned(), percent_decode(secret)] {
        if s.len() >= 3
            && let Ok(mut v) = SECRETS.lock()
            && !v.contains(&s)
        {
            v.push(s);
            // Longest first, so that a secret containing another is masked whole.
            v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    if let Ok(v) = SECRETS.lock() {
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
    }
    out
}

/// Register the passwords a connection string carries ([`passwords_in`]), whether or not it
/// parses.
pub fn remember_connstr_secrets(connstr: &str) {
    for pw in passwords_in(connstr) {
        remember_secret(&pw);
    }
}

/// The passwords written in `text`: a URL's user info (`scheme://user:PASSWORD@host`; when the
/// password holds an unencoded `/`, `?`, `#` or `@`, everything up to the last `@` of the URL),
/// and `password=` / `sslpassword=` values (bare, single-quoted with `\'` escapes, or in a URL
/// query). Meant for masking: it errs on the side of finding too much.
pub fn passwords_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("://") {
        let rest = &text[i + 3..];
        // The URL ends at whitespace or a quote (in a config file).
        let url = &rest[..rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len())];
        let Some(colon) = url.find(':') else { continue };
        // The regular case: user info ends at the first `@` of the authority.
        let authority = &url[..url.find(['/', '?', '#']).unwrap_or(url.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            out.push(pw.to_owned());
        }
        // An unencoded `/`, `?` or `#` in the password: up to the URL's last `@`.
        if let Some(at) = url.rfind('@')
            && at > colon
        {
            let candidate = &url[colon + 1..at];
            if !authority.contains('@') || candidate.len() > authority.len() {
                out.push(candidate.to_owned());
            }
        }
    }
    for key in ["password", "sslpassword"] {
        for (i, _) in text.match_indices(key) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `sslpassword` when looking for `password`, or another word
            }
            let rest = text[i + key.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('=') else {
                continue;
            };
            let rest = rest.trim_start();
            if let Some(quoted) = rest.strip_prefix('\'') {
                let mut value = String::new();
                let mut chars = quoted.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '\'' => break,
                        c => value.push(c),
                    }
                }
                out.push(value);
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || "&\"'#".contains(c))
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_owned());
            }
        }
    }
    out.retain(|p| !p.is_empty());
    out.dedup();
    out
}

/// Decode `%XX` escapes (lossy).
pub(crate) fn percent_decode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords() {
        assert_eq!(
            passwords_in("postgres://me:s%40cret@h:5/db?password=other-pw&x=1"),
            vec!["s%40cret", "other-pw"]
        );
        // Unencoded `/`, `?` and `@` in the password.
        assert_eq!(passwords_in("postgres://me:pa/ss@h/db"), vec!["pa/ss"]);
        assert_eq!(passwords_in("postgresql://me:pa?ss@h/db"), vec!["pa?ss"]);
        assert!(
            passwords_in("postgres://me:p@ss@h/db")
                .iter()
                .any(|p| p == "p@ss")
        );
        assert!(passwords_in("postgres://me@h/db").is_empty());
    }

    #[test]
    fn keyword_passwords() {
        assert_eq!(
            passwords_in(r"host=h password='it\'s secret' user=u"),
            vec!["it's secret"]
        );
        assert_eq!(
            passwords_in("databases = \"host=h password=Secret-1 dbname=x\""),
            vec!["Secret-1"]
        );
        assert_eq!(passwords_in("sslpassword = keypw"), vec!["keypw"]);
        assert!(passwords_in("no_password=x").is_empty());
    }

    #[test]
    fn redaction() {
        remember_connstr_secrets("postgres://me:s%40cret-pw@host:5/db?password=other-pw");
        remember_connstr_secrets("postgres://me:sla/sh?pw@host/db");
        assert_eq!(
            redact("a s@cret-pw b s%40cret-pw c other-pw d sla/sh?pw"),
            "a *** b *** c *** d ***"
        );
        remember_secret("ab");
        assert_eq!(redact("ab"), "ab");
    }
}
