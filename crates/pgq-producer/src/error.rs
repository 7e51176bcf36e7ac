//! The producer's error type.

use pgq_core::PgqRole;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from an event source handed to [`crate::Producer::copy`].
pub use pgq_core::BoxError;

/// What kind of failure an [`Error`] is; match on this rather than on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A failure of the database layer; the inner kind tells which: `QueueNotFound`,
    /// `InsertDisabled`, `PerTxLimit`, `PermissionDenied` (the error names the role to grant),
    /// any other.
    Core(pgq_core::ErrorKind),
    /// A text field contains a NUL byte.
    NulByte,
    /// A text field is over PostgreSQL's field limit (1 GiB).
    TooLarge,
    /// A value could not be serialized to JSON.
    Serialize,
    /// The event source of a COPY failed half way.
    CopySource,
    /// A COPY was cancelled half way.
    CopyCancelled,
    /// Change-capture options that pgq cannot honour, or a table that cannot be captured.
    InvalidCapture,
}

/// The error of every producer operation. Whenever a send, batch or COPY fails, none of its
/// events are inserted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue does not exist.
    #[error(
        "queue {queue:?} does not exist: create it first (pgq_core::create_queue, or `pgq queue create`)"
    )]
    QueueNotFound {
        /// The queue.
        queue: String,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// Inserts into the queue are disabled.
    #[error(
        "inserts into queue {queue:?} are disabled; nothing was inserted (re-enable them with pgq_core::set_insert_disabled(.., false))"
    )]
    InsertDisabled {
        /// The queue.
        queue: String,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// The queue's per-transaction limit was exceeded.
    #[error(
        "queue {queue:?} limits how many events one transaction may insert, and this transaction went over it; \
         nothing was inserted by this call (roll back, then send fewer events per transaction or raise per_tx_limit)"
    )]
    PerTxLimit {
        /// The queue.
        queue: String,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// A text field contains a NUL byte, which PostgreSQL text cannot hold.
    #[error(
        "event {index}: {field} contains a NUL byte, which PostgreSQL text cannot hold; nothing was inserted"
    )]
    NulByte {
        /// Position of the event in the call's input (0 for a single send).
        index: u64,
        /// The field (`ev_type`, `ev_data`, `extra1` .. `extra4`).
        field: &'static str,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// A text field is over PostgreSQL's field limit.
    #[error(
        "event {index}: {field} is {len} bytes, over PostgreSQL's limit of 1 GiB per field; nothing was inserted \
         (store large payloads elsewhere and send a reference)"
    )]
    TooLarge {
        /// Position of the event in the call's input (0 for a single send).
        index: u64,
        /// The field.
        field: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// A value could not be serialized to JSON.
    #[error("could not serialize a {ev_type:?} event to JSON: {source}; nothing was inserted")]
    Serialize {
        /// The event type.
        ev_type: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The event source of a COPY failed half way.
    #[error(
        "COPY into queue {queue:?} stopped: the event source failed after {events_read} events: {source}; \
         the COPY was aborted, so the transaction holds none of its events and must be rolled back"
    )]
    CopySource {
        /// The queue.
        queue: String,
        /// Events read from the source before it failed.
        events_read: u64,
        /// The source's error.
        #[source]
        source: BoxError,
    },
    /// A COPY was cancelled half way.
    #[error(
        "COPY into queue {queue:?} cancelled after {events_read} events; the COPY was aborted, so the \
         transaction holds none of its events and must be rolled back (the connection stays usable)"
    )]
    CopyCancelled {
        /// The queue.
        queue: String,
        /// Events read before the cancellation.
        events_read: u64,
    },
    /// The database role lacks a privilege.
    #[error("{what} needs the {role} role: grant it to the connecting user ({source})")]
    PermissionDenied {
        /// What was attempted, and what else it needs.
        what: &'static str,
        /// The pgq role that grants the privilege.
        role: PgqRole,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
    /// Change-capture options that pgq cannot honour, or a table that cannot be captured.
    #[error("change capture on table {table:?}: {reason}")]
    InvalidCapture {
        /// The table.
        table: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Any other failure of the database layer.
    #[error("queue {queue:?}: {source}")]
    Database {
        /// The queue (or table, for change capture).
        queue: String,
        /// The database layer's error.
        #[source]
        source: Box<pgq_core::Error>,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::QueueNotFound { source, .. }
            | Error::InsertDisabled { source, .. }
            | Error::PerTxLimit { source, .. }
            | Error::PermissionDenied { source, .. }
            | Error::Database { source, .. } => ErrorKind::Core(source.kind()),
            Error::NulByte { .. } => ErrorKind::NulByte,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Serialize { .. } => ErrorKind::Serialize,
            Error::CopySource { .. } => ErrorKind::CopySource,
            Error::CopyCancelled { .. } => ErrorKind::CopyCancelled,
            Error::InvalidCapture { .. } => ErrorKind::InvalidCapture,
        }
    }

    /// The database layer's error, when there is one.
    pub fn core_error(&self) -> Option<&pgq_core::Error> {
        match self {
            Error::QueueNotFound { source, .. }
            | Error::InsertDisabled { source, .. }
            | Error::PerTxLimit { source, .. }
            | Error::NulByte { source, .. }
            | Error::TooLarge { source, .. }
            | Error::PermissionDenied { source, .. }
            | Error::Database { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// True when retrying later (for example after a reconnect) may succeed.
    pub fn is_transient(&self) -> bool {
        self.core_error().is_some_and(pgq_core::Error::is_transient)
    }

    /// Classify an error of the database layer raised while producing to `queue`; `what` says
    /// what was attempted (used when a privilege is missing).
    pub(crate) fn from_core(queue: &str, what: &'static str, source: pgq_core::Error) -> Error {
        let queue = queue.to_owned();
        let kind = source.kind();
        let role = match &source {
            pgq_core::Error::PermissionDenied { role, .. } => *role,
            _ => PgqRole::Admin,
        };
        match &source {
            pgq_core::Error::InvalidEventField {
                index,
                field,
                problem: pgq_core::FieldProblem::NulByte,
                ..
            } => {
                return Error::NulByte {
                    index: *index,
                    field,
                    source: Box::new(source),
                };
            }
            pgq_core::Error::InvalidEventField {
                index,
                field,
                problem: pgq_core::FieldProblem::TooLarge { len },
                ..
            } => {
                return Error::TooLarge {
                    index: *index,
                    field,
                    len: *len,
                    source: Box::new(source),
                };
            }
            _ => {}
        }
        let source = Box::new(source);
        match kind {
            pgq_core::ErrorKind::QueueNotFound => Error::QueueNotFound { queue, source },
            pgq_core::ErrorKind::InsertDisabled => Error::InsertDisabled { queue, source },
            pgq_core::ErrorKind::PerTxLimit => Error::PerTxLimit { queue, source },
            pgq_core::ErrorKind::PermissionDenied => Error::PermissionDenied { what, role, source },
            _ => Error::Database { queue, source },
        }
    }
    /// This error of a statement given the events of the call from position `first` on: a bad
    /// event's position counted in the whole call.
    pub(crate) fn offset_by(mut self, first: u64) -> Error {
        if let Error::NulByte { index, .. } | Error::TooLarge { index, .. } = &mut self {
            *index += first;
        }
        self
    }
}
