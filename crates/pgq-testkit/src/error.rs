use std::path::PathBuf;

/// Why a test cluster or test database could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}): run scripts/setup-env \
         or apt-get install postgresql-15 (or set PGQ_TEST_PG_BINDIR)"
    )]
    BinariesNotFound {
        /// The places that were looked at.
        searched: String,
    },
    /// Running as root, PostgreSQL must run as the `postgres` OS user, which does not exist.
    #[error(
        "running as root, but the OS user `postgres` (needed to run PostgreSQL) does not exist: \
         run scripts/setup-env or apt-get install postgresql-15"
    )]
    NoPostgresUser,
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (`initdb`, `pg_ctl`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard output and standard error.
        output: String,
    },
    /// The server did not start.
    #[error("PostgreSQL did not start: {reason}\n--- tail of {} ---\n{log_tail}", log.display())]
    Start {
        /// What `pg_ctl` said.
        reason: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines the server wrote to its log during this start.
        log_tail: String,
    },
    /// The operation needs a private cluster, but this one is an external server.
    #[error("`{0}` is not possible on an external server (PGQ_TEST_DATABASE_URL is set)")]
    External(&'static str),
    /// `PGQ_TEST_DATABASE_URL` could not be understood.
    #[error("invalid PGQ_TEST_DATABASE_URL `{url}`: {reason}")]
    BadUrl {
        /// The URL given (as given).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
