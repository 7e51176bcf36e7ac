//! The CLI's error: what failed and what to do next.

use pgq_core::{ConsumerName, ErrorKind as CoreKind, QueueName};

/// What kind of failure a [`CliError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum ErrorKind {
    /// The database could not be reached (or the connection settings are wrong).
    Connect,
    /// A pgq operation failed.
    Pgq(CoreKind),
    /// The input (a `--file` line, a setting) is not valid.
    Input,
    /// Reading or writing a local file or stream failed.
    Io,
    /// The request was refused before anything was changed (for example dropping a queue that
    /// still has consumers).
    Refused,
    /// `pgq status --check` found warnings (they were printed).
    Warnings,
}

/// Every failure of a `pgq` command. Its message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// The database could not be reached.
    #[error("{message}")]
    Connect {
        /// The message (never contains a password).
        message: String,
    },
    /// A pgq operation failed.
    #[error("{}", explain(.source, .queue.as_deref(), .consumer.as_deref()))]
    Pgq {
        /// The core error.
        source: Box<pgq_core::Error>,
        /// The queue the command was about.
        queue: Option<String>,
        /// The consumer the command was about.
        consumer: Option<String>,
    },
    /// Invalid input.
    #[error("{0}")]
    Input(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Refused before changing anything.
    #[error("{0}")]
    Refused(String),
    /// `pgq status --check` found this many warnings (already printed with the status).
    #[error("{0} warning(s)")]
    Warnings(usize),
}

impl CliError {
    /// The kind of failure.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            CliError::Connect { .. } => ErrorKind::Connect,
            CliError::Pgq { source, .. } => ErrorKind::Pgq(source.kind()),
            CliError::Input(_) => ErrorKind::Input,
            CliError::Io { .. } => ErrorKind::Io,
            CliError::Refused(_) => ErrorKind::Refused,
            CliError::Warnings(_) => ErrorKind::Warnings,
        }
    }

    /// Whether this is a closed standard output (`pgq tail | head`): not a failure.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        match self {
            CliError::Io { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }

    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<pgq_core::Error> for CliError {
    fn from(source: pgq_core::Error) -> Self {
        CliError::Pgq {
            source: Box::new(source),
            queue: None,
            consumer: None,
        }
    }
}

/// Attach the queue (and consumer) a failed core call was about, for the message.
pub(crate) trait Names<T> {
    /// The call was about `queue`.
    fn queue(self, queue: &QueueName) -> Result<T, CliError>;
    /// The call was about `consumer` on `queue`.
    fn consumer(self, queue: &QueueName, consumer: &ConsumerName) -> Result<T, CliError>;
}

impl<T> Names<T> for Result<T, pgq_core::Error> {
    fn queue(self, queue: &QueueName) -> Result<T, CliError> {
        self.map_err(|source| CliError::Pgq {
            source: Box::new(source),
            queue: Some(queue.to_string()),
            consumer: None,
        })
    }

    fn consumer(self, queue: &QueueName, consumer: &ConsumerName) -> Result<T, CliError> {
        self.map_err(|source| CliError::Pgq {
            source: Box::new(source),
            queue: Some(queue.to_string()),
            consumer: Some(consumer.to_string()),
        })
    }
}

/// Quote `s` for a POSIX shell when it needs it, so hints can be pasted. A name with control or
/// invisible formatting characters is written in bash's `$'...'` form with those characters
/// escaped, so a hint never sends them to the terminal raw.
pub(crate) fn sh(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_control() || pgq_core::is_invisible_format(c))
    {
        let mut q = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '\'' => q.push_str("\\'"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    q.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() || pgq_core::is_invisible_format(c) => {
                    q.push_str(&format!("\\u{:04x}", c as u32));
                }
                c => q.push(c),
            }
        }
        q.push('\'');
        return q;
    }
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@+=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The message for a core error, with the next step for a person at the command line.
fn explain(e: &pgq_core::Error, queue: Option<&str>, consumer: Option<&str>) -> String {
    let q = queue.unwrap_or("QUEUE");
    let c = consumer.unwrap_or("CONSUMER");
    match e.kind() {
        CoreKind::QueueNotFound => format!(
            "queue {:?} not found: `pgq queue list` shows the queues; `pgq queue create {}` creates it",
            q,
            sh(q)
        ),
        CoreKind::ConsumerNotRegistered => format!(
            "consumer {:?} is not registered on queue {:?}: `pgq consumer list {}` shows the \
             consumers; `pgq consumer register {} {}` registers it",
            c,
            q,
            sh(q),
            sh(q),
            sh(c)
        ),
        CoreKind::NoTicks => format!(
            "queue {q:?} has no ticks yet: is pgq-ticker (or pgqd) running? `pgq tick {}` ticks \
             it once",
            sh(q)
        ),
        CoreKind::InsertDisabled => format!(
            "inserts into queue {q:?} are disabled: enable them with `pgq queue config {} \
             disable_insert=false`",
            sh(q)
        ),
        CoreKind::TickerDisabled => format!(
            "{e}: `pgq queue resume {}` resumes a paused queue; `pgq queue config {} \
             external_ticker=false` hands an external queue back to the ticker",
            sh(q),
            sh(q)
        ),
        CoreKind::PgqNotInstalled => {
            let msg = e.to_string();
            if msg.contains("pgq install") {
                msg
            } else {
                format!("{msg}: run `pgq install`")
            }
        }
        CoreKind::Database if e.is_transient() => format!(
            "{e}: the connection to the server failed; check that it is running and try again"
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::sh;

    #[test]
    fn shell_quoting() {
        assert_eq!(sh("orders"), "orders");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("evil\x1b[2J"), r"$'evil\x1b[2J'");
        assert_eq!(sh("it's\n\\"), r"$'it\'s\x0a\\'");
        assert_eq!(sh("a\u{202e}b"), r"$'a\u202eb'");
    }
}
