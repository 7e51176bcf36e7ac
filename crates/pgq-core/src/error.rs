//! The core error type and the classification of pgq's exceptions.

use std::fmt;

use crate::sqlstate;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error, as callers' handlers, callbacks and event sources return them (the pgq crates
/// built on this one take and report such errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The pgq roles a database role can be granted (created by the pgq extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PgqRole {
    /// `pgq_reader`: register consumers, read batches, retry and finish them.
    Reader,
    /// `pgq_writer`: insert events (`pgq.insert_event`), attach the pgq triggers.
    Writer,
    /// `pgq_admin`: tick, maintenance, queue management, `COPY` into event tables, raw inserts.
    Admin,
}

impl PgqRole {
    /// The role's name in PostgreSQL.
    pub fn as_str(self) -> &'static str {
        match self {
            PgqRole::Reader => "pgq_reader",
            PgqRole::Writer => "pgq_writer",
            PgqRole::Admin => "pgq_admin",
        }
    }
}

impl fmt::Display for PgqRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an [`Error`] is; match on this rather than on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The queue does not exist.
    QueueNotFound,
    /// The consumer is not registered on the queue.
    ConsumerNotRegistered,
    /// The queue has no ticks yet: the ticker is not running.
    NoTicks,
    /// The batch does not exist, is already finished, or belongs to someone else.
    BatchNotFound,
    /// The tick does not exist (any more).
    TickNotFound,
    /// The event does not exist in the batch.
    EventNotFound,
    /// Inserts into the queue are disabled.
    InsertDisabled,
    /// The queue's per-transaction event limit was exceeded.
    PerTxLimit,
    /// The queue still has consumers (drop it with `force`).
    QueueHasConsumers,
    /// The queue is ticked externally, or its ticker is paused.
    TickerDisabled,
    /// The pgq extension (or our schema) is not installed.
    PgqNotInstalled,
    /// The installed pgq version is not supported.
    UnsupportedVersion,
    /// A queue or consumer name is not valid.
    InvalidName,
    /// An argument is not valid (NUL bytes, oversized payloads, bad configuration values).
    InvalidInput,
    /// The database role lacks a privilege; the error names the pgq role that grants it.
    PermissionDenied,
    /// The database runs pgq on one backend and the other was asked for (`install`).
    BackendMismatch,
    /// The chosen pgq backend cannot be installed here; the error says why and what to do.
    BackendUnavailable,
    /// Any other database or connection error.
    Database,
}

/// Which operation failed; used for context in messages and to name the pgq role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) name: &'static str,
    pub(crate) role: Option<PgqRole>,
}

impl Op {
    pub(crate) const fn reader(name: &'static str) -> Op {
        Op {
            name,
            role: Some(PgqRole::Reader),
        }
    }
    pub(crate) const fn writer(name: &'static str) -> Op {
        Op {
            name,
            role: Some(PgqRole::Writer),
        }
    }
    pub(crate) const fn admin(name: &'static str) -> Op {
        Op {
            name,
            role: Some(PgqRole::Admin),
        }
    }
    pub(crate) const fn public(name: &'static str) -> Op {
        Op { name, role: None }
    }
}

/// The error of every `pgq-core` operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue does not exist.
    #[error("{op}: queue not found{}", fmt_name(.queue))]
    QueueNotFound {
        /// The operation that failed.
        op: &'static str,
        /// The queue, when known.
        queue: Option<String>,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The consumer is not registered on the queue.
    #[error("{op}: consumer not registered on the queue (register it first)")]
    ConsumerNotRegistered {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The queue has no ticks yet.
    #[error("{op}: the queue has no ticks yet: is the ticker running? (start pgq-ticker or pgqd)")]
    NoTicks {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The batch was not found, is finished, or belongs to another consumer.
    #[error("{op}: batch {batch} not found (already finished, or not this consumer's)")]
    BatchNotFound {
        /// The operation that failed.
        op: &'static str,
        /// The batch id.
        batch: i64,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// A tick was not found.
    #[error("{op}: tick not found{}", .tick.map(|t| format!(": {t}")).unwrap_or_default())]
    TickNotFound {
        /// The operation that failed.
        op: &'static str,
        /// The tick id, when known.
        tick: Option<i64>,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The event was not found in the batch.
    #[error("{op}: event not found in the batch")]
    EventNotFound {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// Inserts into the queue are disabled.
    #[error(
        "{op}: inserts into this queue are disabled (enable them with pgq_core::set_insert_disabled(.., false))"
    )]
    InsertDisabled {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The per-transaction limit was exceeded.
    #[error("{op}: the queue's per-transaction event limit was exceeded ({message})")]
    PerTxLimit {
        /// The operation that failed.
        op: &'static str,
        /// pgq's message.
        message: String,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The queue still has consumers.
    #[error("{op}: the queue still has consumers: unregister them or drop with force")]
    QueueHasConsumers {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The queue's ticker is external or paused.
    #[error("{op}: {message}")]
    TickerDisabled {
        /// The operation that failed.
        op: &'static str,
        /// pgq's message.
        message: String,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// pgq (or our schema) is missing.
    #[error("{message}")]
    PgqNotInstalled {
        /// What is missing and how to install it.
        message: String,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The pgq version is not supported.
    #[error("unsupported pgq version {found}: this library needs pgq {needed}")]
    UnsupportedVersion {
        /// The version found.
        found: String,
        /// The versions supported.
        needed: &'static str,
    },
    /// A name is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Queue name or consumer name.
        what: &'static str,
        /// The rejected value (lossy, truncated).
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An argument is not valid.
    #[error("{op}: invalid input: {reason}")]
    InvalidInput {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A text field of an event that PostgreSQL cannot store (kind
    /// [`ErrorKind::InvalidInput`]); nothing of the call was inserted.
    #[error("{op}: invalid input: {field} {problem}")]
    InvalidEventField {
        /// The operation that failed.
        op: &'static str,
        /// The event's position in the call's input (0 for a single event; for a stream, the
        /// number of events before it).
        index: u64,
        /// The field: `ev_type`, `ev_data`, `extra1` .. `extra4`.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// The database role lacks a privilege.
    #[error("{op}: permission denied: grant the role {role} to the connecting user{}", .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    PermissionDenied {
        /// The operation that failed.
        op: &'static str,
        /// The pgq role that grants the privilege.
        role: PgqRole,
        /// PostgreSQL's message.
        detail: Option<String>,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The database runs pgq on one backend and the other was asked for: a database is never
    /// switched between backends.
    #[error(
        "install: this database runs pgq on the {installed} backend and the {requested} backend \
         was requested: a database is never switched between backends (install with the \
         {installed} backend, or use another database)"
    )]
    BackendMismatch {
        /// The backend the database has.
        installed: crate::Backend,
        /// The backend that was asked for.
        requested: crate::Backend,
    },
    /// The chosen backend cannot be installed in this database.
    #[error("install: cannot install the pgq {backend} backend: {reason}")]
    BackendUnavailable {
        /// The backend that could not be installed.
        backend: crate::Backend,
        /// Why, and what to do.
        reason: String,
        /// The database error.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// Any other database error.
    #[error("{op}: database error: {source}")]
    Database {
        /// The operation that failed.
        op: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Running the schema migrations failed.
    #[error("schema install failed: {source}")]
    Migrate {
        /// The migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Why PostgreSQL cannot store a text value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldProblem {
    /// It contains a NUL byte, which PostgreSQL text cannot hold.
    NulByte,
    /// It is over PostgreSQL's field limit of 1 GiB ([`crate::MAX_FIELD_BYTES`]).
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::NulByte => f.write_str("contains a NUL byte"),
            FieldProblem::TooLarge { len } => {
                write!(f, "is {len} bytes, over PostgreSQL's field limit of 1 GiB")
            }
        }
    }
}

fn fmt_name(name: &Option<String>) -> String {
    name.as_deref()
        .map(|n| format!(": {n:?}"))
        .unwrap_or_default()
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::QueueNotFound { .. } => ErrorKind::QueueNotFound,
            Error::ConsumerNotRegistered { .. } => ErrorKind::ConsumerNotRegistered,
            Error::NoTicks { .. } => ErrorKind::NoTicks,
            Error::BatchNotFound { .. } => ErrorKind::BatchNotFound,
            Error::TickNotFound { .. } => ErrorKind::TickNotFound,
            Error::EventNotFound { .. } => ErrorKind::EventNotFound,
            Error::InsertDisabled { .. } => ErrorKind::InsertDisabled,
            Error::PerTxLimit { .. } => ErrorKind::PerTxLimit,
            Error::QueueHasConsumers { .. } => ErrorKind::QueueHasConsumers,
            Error::TickerDisabled { .. } => ErrorKind::TickerDisabled,
            Error::PgqNotInstalled { .. } => ErrorKind::PgqNotInstalled,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::InvalidInput { .. } | Error::InvalidEventField { .. } => ErrorKind::InvalidInput,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::BackendMismatch { .. } => ErrorKind::BackendMismatch,
            Error::BackendUnavailable { .. } => ErrorKind::BackendUnavailable,
            Error::Database { .. } | Error::Migrate { .. } => ErrorKind::Database,
        }
    }

    /// The SQLSTATE of the underlying database error, if any.
    pub fn sqlstate(&self) -> Option<String> {
        let src = match self {
            Error::Database { source, .. } => Some(source),
            Error::QueueNotFound { source, .. }
            | Error::ConsumerNotRegistered { source, .. }
            | Error::NoTicks { source, .. }
            | Error::BatchNotFound { source, .. }
            | Error::TickNotFound { source, .. }
            | Error::EventNotFound { source, .. }
            | Error::InsertDisabled { source, .. }
            | Error::PerTxLimit { source, .. }
            | Error::QueueHasConsumers { source, .. }
            | Error::TickerDisabled { source, .. }
            | Error::PgqNotInstalled { source, .. }
            | Error::BackendUnavailable { source, .. }
            | Error::PermissionDenied { source, .. } => source.as_ref(),
            _ => None,
        }?;
        src.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    }

    /// True when retrying the operation later (for example after a reconnect) may succeed:
    /// connection, I/O and pool errors, serialization failures and server shutdowns.
    pub fn is_transient(&self) -> bool {
        let Error::Database { source, .. } = self else {
            return false;
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| sqlstate::is_transient(&c)),
            _ => false,
        }
    }

    /// An error of the caller's own connection or transaction handling around pgq calls
    /// (acquiring a pooled connection, `BEGIN`, `COMMIT`, `ROLLBACK`, savepoints): an
    /// [`Error::Database`] of the operation `transaction`, for crates that manage transactions
    /// around this one's functions.
    pub fn transaction(source: sqlx::Error) -> Error {
        Error::Database {
            op: "transaction",
            source,
        }
    }

    pub(crate) fn invalid_input(op: Op, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            op: op.name,
            reason: reason.into(),
        }
    }

    /// Classify a database error raised by operation `op`.
    pub(crate) fn from_sqlx(err: sqlx::Error, op: Op) -> Error {
        let (code, message) = match err.as_database_error() {
            Some(d) => (
                d.code().map(|c| c.into_owned()).unwrap_or_default(),
                d.message().to_owned(),
            ),
            None => {
                return Error::Database {
                    op: op.name,
                    source: err,
                };
            }
        };
        let name = op.name;
        let lower = message.to_ascii_lowercase();
        if code == sqlstate::INSUFFICIENT_PRIVILEGE {
            // Reading pgq's tables needs no pgq role; anything else is admin-level.
            let role = op.role.unwrap_or(PgqRole::Admin);
            return Error::PermissionDenied {
                op: name,
                role,
                detail: Some(message),
                source: Some(err),
            };
        }
        if sqlstate::is_undefined_object(&code) && lower.contains("pgq") {
            let (missing, needs) = if lower.contains("pgq_rs") {
                (
                    "this project's schema (pgq_rs) is missing or older than this build",
                    "",
                )
            } else {
                (
                    "the pgq extension is not installed in this database",
                    " (the server needs the postgresql-<major>-pgq3 package)",
                )
            };
            return Error::PgqNotInstalled {
                message: format!(
                    "{name}: {missing} ({message}): run `pgq install` or pgq_core::install(){needs}"
                ),
                source: Some(err),
            };
        }
        if code != sqlstate::RAISE_EXCEPTION && code != sqlstate::INTERNAL_ERROR {
            return Error::Database {
                op: name,
                source: err,
            };
        }
        let source = Some(err);
        let has = |s: &str| lower.contains(s);
        if has("allows max") && has("events from one tx") {
            Error::PerTxLimit {
                op: name,
                message,
                source,
            }
        } else if has("writing to queue disabled") || has("insert into queue disallowed") {
            Error::InsertDisabled { op: name, source }
        } else if has("no ticks for this queue") {
            Error::NoTicks { op: name, source }
        } else if has("tick not found") {
            let tick = message
                .rsplit(':')
                .next()
                .and_then(|t| t.trim().parse().ok());
            Error::TickNotFound {
                op: name,
                tick,
                source,
            }
        } else if has("consumer not registered") || has("not subscriber to queue") {
            Error::ConsumerNotRegistered { op: name, source }
        } else if has("consumers still attached") {
            Error::QueueHasConsumers { op: name, source }
        } else if has("external tick source") || has("ticker has been paused") {
            Error::TickerDisabled {
                op: name,
                message,
                source,
            }
        } else if has("queue not found")
            || has("no such queue")
            || has("no such event queue")
            || has("event queue not found")
            || has("event queue not created")
        {
            Error::QueueNotFound {
                op: name,
                queue: None,
                source,
            }
        } else if has("pgq_coop:") || has("dead letters not found") {
            Error::InvalidInput {
                op: name,
                reason: message,
            }
        } else if has("batch")
            && (has("not found") || has("cannot find data") || has("could not construct"))
        {
            let batch = message
                .split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Error::BatchNotFound {
                op: name,
                batch,
                source,
            }
        } else if has("event not found") {
            Error::EventNotFound { op: name, source }
        } else if has("cannot change parameter") || has("invalid null value") {
            Error::InvalidInput {
                op: name,
                reason: message,
            }
        } else {
            match source {
                Some(source) => Error::Database { op: name, source },
                None => Error::InvalidInput {
                    op: name,
                    reason: message,
                },
            }
        }
    }
}

/// Extension to classify `sqlx` results by operation.
pub(crate) trait ResultExt<T> {
    fn op(self, op: Op) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn op(self, op: Op) -> Result<T> {
        self.map_err(|e| Error::from_sqlx(e, op))
    }
}
