//! The consumer's error type.

use pgq_core::BatchId;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error, as handlers and callbacks return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
        }
    }

    /// True when the run loop should give up instead of retrying: the consumer or its queue is
    /// missing, a privilege or the pgq extension is missing, or the configuration is wrong.
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
            Error::Config(_) => true,
            _ => false,
        }
    }
}

impl From<pgq_core::sqlx::Error> for Error {
    fn from(e: pgq_core::sqlx::Error) -> Self {
        Error::Core(pgq_core::Error::Database {
            op: "transaction",
            source: e,
        })
    }
}
