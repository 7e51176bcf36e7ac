//! The consumer's error type.

use pgq_core::BatchId;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error, as handlers and callbacks return them.
pub use pgq_core::BoxError;

/// What kind of failure an [`Error`] is; match on this rather than on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A database or pgq error; the inner kind tells which.
    Core(pgq_core::ErrorKind),
    /// A batch was finished before it was read to the end.
    NotFullyRead,
    /// The batch belongs to another consumer (or queue).
    ForeignBatch,
    /// The dead-letter callback failed.
    DeadLetter,
    /// The consumer's configuration is not valid.
    Config,
    /// The database's `pgq_coop` is missing or not the one cooperative members need.
    CoopUnsupported,
    /// The database did not answer within the consumer's `database_timeout`.
    Unresponsive,
}

/// The error of every `pgq-consumer` operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database or pgq error.
    #[error(transparent)]
    Core(#[from] pgq_core::Error),
    /// Finishing a batch that was not read to the end was refused: finishing would silently skip
    /// the unread events.
    #[error(
        "batch {batch} was not read to the end ({read} events read): read it to the end, or call \
         skip_rest() or retry_rest() before finishing (or abandon() it for redelivery)"
    )]
    NotFullyRead {
        /// The batch.
        batch: BatchId,
        /// How many events were read.
        read: u64,
    },
    /// The batch is not this consumer's.
    #[error(
        "batch {batch} belongs to consumer {owner_consumer:?} on queue {owner_queue:?}, not to \
         consumer {consumer:?} on queue {queue:?}: refusing to touch it"
    )]
    ForeignBatch {
        /// The batch.
        batch: BatchId,
        /// This consumer's queue.
        queue: String,
        /// This consumer's name.
        consumer: String,
        /// The queue that holds the batch.
        owner_queue: String,
        /// The consumer that holds the batch.
        owner_consumer: String,
    },
    /// The dead-letter callback failed for an event; the batch is not finished and comes again.
    #[error("dead-letter callback failed for event {ev_id}: {source}")]
    DeadLetter {
        /// The event.
        ev_id: i64,
        /// The callback's error.
        #[source]
        source: BoxError,
    },
    /// The configuration is not valid.
    #[error("invalid consumer configuration: {0}")]
    Config(String),
    /// A cooperative member refuses to start: the database has no `pgq_coop` schema, or one that
    /// is not pgq_rs's own (the SkyTools extension, or SQL loaded by hand), whose semantics the
    /// member does not rely on (a takeover's fresh batch id, `touch` as a heartbeat, a batch
    /// returned to the group when a member leaves).
    #[error(
        "cooperative consumers need the pgq_coop schema that pgq_rs installs, but this database \
         has {}: {}",
        found.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string),
        if found.is_some() {
            "drop that pgq_coop (DROP EXTENSION pgq_coop, or DROP SCHEMA pgq_coop CASCADE when no \
             other client uses it) and run `pgq install`, or consume it with the client it was \
             made for"
        } else {
            "run `pgq install` (pgq_core::install)"
        }
    )]
    CoopUnsupported {
        /// What the database has (`None`: no `pgq_coop` schema).
        found: Option<pgq_core::CoopFlavor>,
    },
    /// The database did not answer within the consumer's `database_timeout` (a half-open
    /// connection: the network dropped without a FIN, or the server is stuck). The connection
    /// was dropped; the run loop reconnects with backoff and the batch comes again.
    #[error(
        "{what}: the database did not answer within {}s (database_timeout); the connection was          dropped as dead",
        after.as_secs_f64()
    )]
    Unresponsive {
        /// What was waiting.
        what: &'static str,
        /// The deadline that passed.
        after: std::time::Duration,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => ErrorKind::Core(e.kind()),
            Error::NotFullyRead { .. } => ErrorKind::NotFullyRead,
            Error::ForeignBatch { .. } => ErrorKind::ForeignBatch,
            Error::DeadLetter { .. } => ErrorKind::DeadLetter,
            Error::Config(_) => ErrorKind::Config,
            Error::CoopUnsupported { .. } => ErrorKind::CoopUnsupported,
            Error::Unresponsive { .. } => ErrorKind::Unresponsive,
        }
    }

    /// True when the run loop should give up instead of retrying: the consumer or its queue is
    /// missing, a privilege or the pgq extension is missing, the configuration is wrong, or a
    /// cooperative member finds a `pgq_coop` that is not ours.
    /// Everything else (connection loss, server restarts, a failing dead-letter callback) is
    /// retried with backoff.
    pub fn is_fatal(&self) -> bool {
        use pgq_core::ErrorKind as K;
        match self {
            Error::Core(e) => matches!(
                e.kind(),
                K::QueueNotFound
                    | K::ConsumerNotRegistered
                    | K::PermissionDenied
                    | K::PgqNotInstalled
                    | K::UnsupportedVersion
                    | K::InvalidName
            ),
            Error::Config(_) | Error::CoopUnsupported { .. } => true,
            _ => false,
        }
    }
}

/// The consumer's own transaction handling (`BEGIN`, `COMMIT`, savepoints, pooled connections).
impl From<pgq_core::sqlx::Error> for Error {
    fn from(e: pgq_core::sqlx::Error) -> Self {
        Error::Core(pgq_core::Error::transaction(e))
    }
}
