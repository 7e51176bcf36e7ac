//! Validated queue and consumer names.
//!
//! A name is checked once, when it is made, so every function taking a [`QueueName`] or a
//! [`ConsumerName`] can rely on it. The rule:
//!
//! * not empty;
//! * at most [`QueueName::MAX_LEN`] bytes for a queue (it fits a PostgreSQL identifier, so a queue
//!   name can also name a `NOTIFY` channel), at most [`ConsumerName::MAX_LEN`] bytes for a consumer
//!   (room for a cooperative member's `group.member` name);
//! * no control characters (this includes NUL, which PostgreSQL text cannot hold);
//! * no invisible formatting characters: bidirectional overrides and isolates (U+202A–U+202E,
//!   U+2066–U+2069) and zero-width characters (U+200B–U+200D, U+2060, U+FEFF), which make a name
//!   display as something it is not (two names that look the same, or text shown reversed);
//! * no leading or trailing whitespace (pgq compares names exactly, so `"q "` and `"q"` would be
//!   two different queues that look the same in every listing).
//!
//! Any other Unicode is fine, including quotes: names always travel as bound parameters, and where
//! one must appear in SQL text it is quoted by [`crate::quote_ident`] / [`crate::quote_literal`].

use std::fmt;

use crate::error::Error;

/// Whether `c` is an invisible formatting character a name must not contain: a bidirectional
/// override or isolate (U+202A–U+202E, U+2066–U+2069) or a zero-width character (U+200B–U+200D,
/// U+2060, U+FEFF).
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

fn validate(what: &'static str, s: &str, max: usize) -> Result<(), Error> {
    let reason = if s.is_empty() {
        Some("must not be empty")
    } else if s.len() > max {
        Some(if max == QueueName::MAX_LEN {
            "too long (at most 63 bytes)"
        } else {
            "too long (at most 127 bytes)"
        })
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters or NUL")
    } else if s.chars().any(is_invisible_format) {
        Some(
            "must not contain bidirectional overrides or zero-width characters \
             (U+202A-U+202E, U+2066-U+2069, U+200B-U+200D, U+2060, U+FEFF): they make a name \
             look like another one",
        )
    } else if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        Some("must not start or end with whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let mut value: String = s.chars().take(80).collect();
            if value.len() < s.len() {
                value.push('…');
            }
            Err(Error::InvalidName {
                what,
                value,
                reason,
            })
        }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// The longest name accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validate `name` (see the [module docs](crate::name) for the rule).
            pub fn new(name: impl Into<String>) -> Result<Self, Error> {
                let name = name.into();
                validate($what, &name, Self::MAX_LEN)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A validated queue name (1 to 63 bytes; see the [module docs](crate::name)).
    QueueName,
    "queue name",
    63
);

name_type!(
    /// A validated consumer name (1 to 127 bytes; see the [module docs](crate::name)).
    ///
    /// Cooperative members appear in pgq as `group.member`; [`ConsumerName::is_member_name`]
    /// tells such names apart.
    ConsumerName,
    "consumer name",
    127
);

impl ConsumerName {
    /// True when the name has the `group.member` shape of a cooperative member.
    pub fn is_member_name(&self) -> bool {
        self.0.contains('.')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "q",
            "orders",
            "ünïcode-名前",
            "it's \"quoted\"",
            "'; drop table x; --",
        ] {
            assert_eq!(QueueName::new(ok).unwrap().as_str(), ok);
        }
        assert!(ConsumerName::new("g.m").unwrap().is_member_name());
        assert!(!ConsumerName::new("g").unwrap().is_member_name());
    }

    #[test]
    fn rejects_bad_names() {
        let long = "x".repeat(64);
        for bad in ["", "a\0b", "tab\there", " lead", "trail ", long.as_str()] {
            let e = QueueName::new(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidName, "{bad:?}");
        }
        assert!(ConsumerName::new("x".repeat(127)).is_ok());
        assert!(ConsumerName::new("x".repeat(128)).is_err());
        let e = QueueName::new("x".repeat(10_000)).unwrap_err().to_string();
        assert!(e.len() < 300, "message stays short: {e}");
    }

    #[test]
    fn rejects_invisible_formatting_characters() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
        ] {
            for name in [format!("a{c}b"), format!("{c}ab"), format!("ab{c}")] {
                let e = QueueName::new(name.as_str()).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::InvalidName, "{name:?}");
                let msg = e.to_string();
                assert!(
                    msg.contains("bidirectional overrides or zero-width"),
                    "{msg}"
                );
                // The message shows the character escaped, not raw.
                assert!(!msg.contains(c), "{msg:?}");
                let e = ConsumerName::new(name.as_str()).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::InvalidName, "{name:?}");
            }
        }
        // Right-to-left scripts and the neighbours of the refused ranges stay allowed.
        for ok in ["שלום", "مرحبا", "a–b", "a\u{2061}b", "a\u{2070}b"] {
            assert!(QueueName::new(ok).is_ok(), "{ok:?}");
        }
    }
}
