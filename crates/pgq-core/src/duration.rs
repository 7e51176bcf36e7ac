//! The one duration syntax of PgQ for Rust's programs and files: a number and a unit (`500ms`,
//! `2s`, `1m`, `1h 30m`; humantime's units), or bare seconds, possibly fractional (`0.5`, `30`),
//! as pgqd.ini writes them.
//!
//! ```
//! use std::time::Duration;
//! use pgq_core::duration::parse_duration;
//!
//! assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
//! assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
//! assert!(parse_duration("soon").is_err());
//! ```

use std::time::Duration;

/// A string that is not a duration (see the [module](self) documentation for the syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write it like 500ms, 2s, 1m, or seconds: 0.5)")]
#[non_exhaustive]
pub struct InvalidDuration {
    /// What was given.
    pub input: String,
    /// Why it is not a duration.
    pub reason: String,
}

/// Parse a duration: humantime (`500ms`, `2s`, `1m`, `1h 30m`) or bare seconds (`0.5`, `30`).
/// Negative, infinite and absurdly large (over 31 years) values are refused.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    let t = s.trim();
    let bad = |reason: String| InvalidDuration {
        input: t.to_owned(),
        reason,
    };
    if let Ok(v) = t.parse::<f64>() {
        return if v.is_finite() && (0.0..1e9).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(bad("seconds must be between 0 and 1e9".into()))
        };
    }
    humantime::parse_duration(t).map_err(|e| bad(e.to_string()))
}

/// Format a duration the way [`parse_duration`] reads it (`1m 30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_duration("0.01").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        for bad in ["-1", "soon", "", "NaN", "inf", "1e10"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("500ms"), "{bad}: {e}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    }
}
