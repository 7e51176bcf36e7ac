//! The crate's error type.

use std::time::Duration;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration (flags, TOML file, pgqd.ini, connection string) is not valid.
    Config,
    /// A file (config, pid file, log file) could not be read or written.
    Io,
    /// The metrics/health HTTP endpoint could not be started.
    Http,
    /// A database stayed unreachable longer than `--exit-after-failure`.
    Unreachable,
    /// Another pgq-ticker already runs with the same pid file.
    AlreadyRunning,
}

/// The error of the ticker library and binary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration.
    #[error("invalid configuration{}: {message}", .origin.as_deref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Config {
        /// Where the bad value came from (file and key, or flag), when known.
        origin: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP endpoint could not listen.
    #[error("could not serve metrics/health on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A database stayed unreachable longer than allowed.
    #[error(
        "database {database} has been unreachable for {} (--exit-after-failure {}): {last_error}",
        humantime::format_duration(*down_for), humantime::format_duration(*limit)
    )]
    Unreachable {
        /// The database.
        database: String,
        /// How long it has been down.
        down_for: Duration,
        /// The configured limit.
        limit: Duration,
        /// The last connection or query error.
        last_error: String,
    },
    /// Another process holds the pid file.
    #[error("pid file {pidfile} names running process {pid}: is another pgq-ticker running?")]
    AlreadyRunning {
        /// The pid file.
        pidfile: String,
        /// The process it names.
        pid: u32,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::Http { .. } => ErrorKind::Http,
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::AlreadyRunning { .. } => ErrorKind::AlreadyRunning,
        }
    }

    pub(crate) fn config(origin: impl Into<Option<String>>, message: impl Into<String>) -> Error {
        Error::Config {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
