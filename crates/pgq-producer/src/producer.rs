//! [`Producer`]: sending events to one queue, in the caller's executor.

use std::convert::Infallible;
use std::sync::Mutex;

use futures_core::Stream;
use futures_util::future::{self, Either};
use futures_util::{StreamExt, stream};
use pgq_core::sqlx::{Acquire, Connection, PgConnection, PgExecutor, Postgres};
use pgq_core::{EventId, NewEvent, QueueName, RawEvent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, Error, Result};

/// The future of [`Producer::send_batch`]: boxed, `Send`, resolving to the events' ids in order.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<EventId>>> + Send + 'a>>;
use crate::typed::{TypedEvent, json_event, typed_event};

const SEND: &str = "sending an event (pgq.insert_event)";
const SEND_TIMED: &str = "sending an event with an explicit time (pgq.insert_event_raw)";
const BATCH: &str = "send_batch (pgq.insert_event, or pgq.insert_event_raw for events with a time)";
const COPY: &str = "copy (COPY into the queue's event table; send_batch works with pgq_writer)";

/// Default most events in one `send_batch` statement ([`pgq_core::ChunkLimits::DEFAULT`]).
pub const DEFAULT_BATCH_ROWS: usize = pgq_core::ChunkLimits::DEFAULT.rows;
/// Default most payload bytes (all text fields) in one `send_batch` statement.
pub const DEFAULT_BATCH_BYTES: usize = pgq_core::ChunkLimits::DEFAULT.bytes;

/// Produces events into one queue, always in the executor it is given — a pool, a connection, or
/// the application's own transaction — so events commit or roll back with the application's data.
///
/// | method | one statement does | role needed |
/// |---|---|---|
/// | [`send`](Self::send), [`send_json`](Self::send_json), [`send_typed`](Self::send_typed) | one event | `pgq_writer` (`pgq_admin` for an event with an explicit time) |
/// | [`send_batch`](Self::send_batch), [`send_typed_batch`](Self::send_typed_batch) | up to 10 000 events (set-based) | `pgq_writer` (`pgq_admin` with explicit times) |
/// | [`copy`](Self::copy), [`copy_iter`](Self::copy_iter), [`copy_cancellable`](Self::copy_cancellable) | any number (COPY, bounded memory) | `pgq_admin` |
///
/// A missing privilege is [`Error::PermissionDenied`], naming the role to grant. Every text field
/// is checked (by the database layer, once) before its event is sent: a NUL byte or a field over
/// 1 GiB is refused with the event's position, and nothing of the call is inserted.
///
/// Events become visible to consumers after their transaction commits and the ticker ticks.
#[derive(Debug, Clone)]
pub struct Producer {
    queue: QueueName,
    batch_rows: usize,
    batch_bytes: usize,
}

/// Marks the end of a COPY stopped by the producer (the reason is kept aside, typed).
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by the producer")
    }
}

impl Producer {
    /// A producer for `queue` (the queue must exist when events are sent).
    pub fn new(queue: QueueName) -> Producer {
        Producer {
            queue,
            batch_rows: DEFAULT_BATCH_ROWS,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }

    /// Limit one `send_batch` statement to `rows` events and `bytes` bytes of text (at least one
    /// event per statement). Larger batches take several statements in one transaction (a
    /// savepoint inside the caller's), so they still insert all or nothing.
    pub fn with_batch_limits(mut self, rows: usize, bytes: usize) -> Producer {
        self.batch_rows = rows.max(1);
        self.batch_bytes = bytes.max(1);
        self
    }

    /// The queue.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn fail(&self, what: &'static str, e: pgq_core::Error) -> Error {
        Error::from_core(self.queue.as_str(), what, e)
    }

    /// [`fail`](Self::fail) for a statement whose first event is event `first` of the call.
    fn fail_from(&self, what: &'static str, first: u64, e: pgq_core::Error) -> Error {
        self.fail(what, e).offset_by(first)
    }

    fn transaction_fail(&self, what: &'static str, e: pgq_core::sqlx::Error) -> Error {
        self.fail(what, pgq_core::Error::transaction(e))
    }

    /// Send one event (type, data, extras and an optional time). Returns its id.
    ///
    /// Needs `pgq_writer`; an event with [`NewEvent::time`] set goes through
    /// `pgq.insert_event_raw`, which needs `pgq_admin`.
    pub async fn send<'e>(&self, ex: impl PgExecutor<'e>, ev: &NewEvent) -> Result<EventId> {
        match ev.time {
            None => pgq_core::insert_event_ext(ex, &self.queue, ev)
                .await
                .map_err(|e| self.fail(SEND, e)),
            Some(ev_time) => {
                let raw = RawEvent {
                    ev_time,
                    ev_type: Some(ev.ev_type.clone()),
                    ev_data: Some(ev.ev_data.clone()),
                    ev_extra1: ev.extra1.clone(),
                    ev_extra2: ev.extra2.clone(),
                    ev_extra3: ev.extra3.clone(),
                    ev_extra4: ev.extra4.clone(),
                    ..RawEvent::default()
                };
                pgq_core::insert_event_raw(ex, &self.queue, &raw)
                    .await
                    .map_err(|e| self.fail(SEND_TIMED, e))
            }
        }
    }

    /// Send `value` as JSON with event type `ev_type`. Needs `pgq_writer`.
    pub async fn send_json<'e, T: Serialize + ?Sized>(
        &self,
        ex: impl PgExecutor<'e>,
        ev_type: &str,
        value: &T,
    ) -> Result<EventId> {
        self.send(ex, &json_event(ev_type, value)?).await
    }

    /// Send a typed value: its [`TypedEvent::EVENT_TYPE`], JSON payload and extras. Needs
    /// `pgq_writer`.
    pub async fn send_typed<'e, T: TypedEvent + serde::Serialize>(
        &self,
        ex: impl PgExecutor<'e>,
        value: &T,
    ) -> Result<EventId> {
        self.send(ex, &typed_event(value)?).await
    }

    /// Split `events` into statements within the row and byte limits.
    fn chunks<'a>(&self, events: &'a [NewEvent]) -> Vec<&'a [NewEvent]> {
        let limits = pgq_core::ChunkLimits::new(self.batch_rows, self.batch_bytes);
        pgq_core::event_chunks(events, limits)
    }

    /// Send many events set-based: one statement and one round trip per chunk (see
    /// [`with_batch_limits`](Self::with_batch_limits)), returning their ids in order. All or
    /// nothing: every event is checked before its chunk is sent, and several chunks run in one
    /// transaction (a savepoint inside the caller's).
    ///
    /// `conn` is anything sqlx can acquire a connection from: `&PgPool`, `&mut PgConnection` or
    /// `&mut Transaction`. (Start transactions through sqlx, not with a raw `BEGIN`, so it knows to
    /// use a savepoint.) Needs `pgq_writer`; events with [`NewEvent::time`] set need `pgq_admin`.
    ///
    /// The future is boxed and `Send`, so it can be awaited in a spawned task (a web handler)
    /// with a transaction of that task: `producer.send_batch(&mut *tx, &events).await`.
    pub fn send_batch<'a, 'c, A>(&'a self, conn: A, events: &'a [NewEvent]) -> SendFuture<'a>
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
        'c: 'a,
    {
        Box::pin(self.send_batch_inner(conn, events))
    }

    async fn send_batch_inner<'c, A>(&self, conn: A, events: &[NewEvent]) -> Result<Vec<EventId>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        let chunks = self.chunks(events);
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = conn
            .acquire()
            .await
            .map_err(|e| self.transaction_fail(BATCH, e))?;
        if let [one] = chunks[..] {
            return pgq_core::insert_events(&mut *conn, &self.queue, one)
                .await
                .map_err(|e| self.fail(BATCH, e));
        }
        let mut tx = Connection::begin(&mut *conn)
            .await
            .map_err(|e| self.transaction_fail(BATCH, e))?;
        let mut ids = Vec::with_capacity(events.len());
        for chunk in chunks {
            // Where this chunk starts in `events`, for the position of a bad event.
            let first = ids.len() as u64;
            match pgq_core::insert_events(&mut *tx, &self.queue, chunk).await {
                Ok(part) => ids.extend(part),
                Err(e) => {
                    // Best effort: the savepoint/transaction is also rolled back when dropped.
                    let _ = tx.rollback().await;
                    return Err(self.fail_from(BATCH, first, e));
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| self.transaction_fail(BATCH, e))?;
        Ok(ids)
    }

    /// [`send_batch`](Self::send_batch) of typed values. Nothing is sent if any value fails to
    /// serialize. Boxed and `Send` like [`send_batch`](Self::send_batch).
    pub fn send_typed_batch<'a, 'c, A, T>(&'a self, conn: A, values: &'a [T]) -> SendFuture<'a>
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
        'c: 'a,
        T: TypedEvent + serde::Serialize + Sync,
    {
        Box::pin(async move {
            let events = values.iter().map(typed_event).collect::<Result<Vec<_>>>()?;
            self.send_batch_inner(conn, &events).await
        })
    }

    /// Bulk-insert a stream of events with `COPY` into the queue's current event table, in the
    /// caller's transaction (pass `&mut tx` or a connection), with bounded memory. Returns the
    /// number of events inserted.
    ///
    /// Events without a time get the transaction's timestamp. The queue's `disable_insert` and
    /// `per_tx_limit` settings are honoured. If the source yields an error
    /// ([`Error::CopySource`]) or an event is invalid, the COPY is aborted: the transaction holds
    /// none of its events and can only roll back. To stop a COPY from elsewhere, use
    /// [`copy_cancellable`](Self::copy_cancellable); dropping the future half way also discards
    /// the COPY, but leaves the connection unusable (close it, or detach it from its pool).
    ///
    /// Needs `pgq_admin` (COPY writes the event table directly); with only `pgq_writer`, use
    /// [`send_batch`](Self::send_batch).
    pub async fn copy<S, E>(&self, conn: &mut PgConnection, events: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<NewEvent, E>>,
        E: Into<BoxError>,
    {
        self.copy_inner(conn, events, None).await
    }

    /// [`copy`](Self::copy) from an iterator.
    pub async fn copy_iter<I>(&self, conn: &mut PgConnection, events: I) -> Result<u64>
    where
        I: IntoIterator<Item = NewEvent>,
    {
        let events = stream::iter(events.into_iter().map(Ok::<_, Infallible>));
        self.copy_inner(conn, events, None).await
    }

    /// [`copy`](Self::copy) that stops when `cancel` is cancelled (checked before each event):
    /// the COPY is aborted cleanly, the call returns [`Error::CopyCancelled`], the transaction
    /// holds none of its events, and the connection stays usable (roll the transaction back).
    pub async fn copy_cancellable<S, E>(
        &self,
        conn: &mut PgConnection,
        events: S,
        cancel: &CancellationToken,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<NewEvent, E>>,
        E: Into<BoxError>,
    {
        self.copy_inner(conn, events, Some(cancel)).await
    }

    async fn copy_inner<S, E>(
        &self,
        conn: &mut PgConnection,
        events: S,
        cancel: Option<&CancellationToken>,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<NewEvent, E>>,
        E: Into<BoxError>,
    {
        // Why the producer stopped the COPY, if it did (the database layer only sees `Stopped`).
        let stopped: Mutex<Option<Error>> = Mutex::new(None);
        let queue = self.queue.as_str();
        let guarded = stream::unfold((Box::pin(events), 0u64, false), |(mut src, read, done)| {
            let stopped = &stopped;
            async move {
                if done {
                    return None;
                }
                let next = match cancel {
                    None => Either::Right(src.next().await),
                    Some(token) if token.is_cancelled() => Either::Left(()),
                    Some(token) => {
                        let cancelled = std::pin::pin!(token.cancelled());
                        match future::select(cancelled, src.next()).await {
                            Either::Left(_) => Either::Left(()),
                            Either::Right((item, _)) => Either::Right(item),
                        }
                    }
                };
                let failure = match next {
                    Either::Right(None) => return None,
                    // The database layer checks the event's fields.
                    Either::Right(Some(Ok(ev))) => return Some((Ok(ev), (src, read + 1, false))),
                    Either::Right(Some(Err(e))) => Error::CopySource {
                        queue: queue.to_owned(),
                        events_read: read,
                        source: e.into(),
                    },
                    Either::Left(()) => Error::CopyCancelled {
                        queue: queue.to_owned(),
                        events_read: read,
                    },
                };
                *stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
                Some((Err(Stopped), (src, read, true)))
            }
        });
        let result = pgq_core::copy_events(conn, &self.queue, guarded).await;
        let why = stopped.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (result, why) {
            (Err(_), Some(why)) => Err(why),
            (Err(e), None) => Err(self.fail(COPY, e)),
            (Ok(n), _) => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let q = QueueName::new("q").unwrap();
        let evs: Vec<NewEvent> = (0..10).map(|i| NewEvent::new("t", "x".repeat(i))).collect();
        let p = Producer::new(q.clone()).with_batch_limits(4, usize::MAX);
        let sizes: Vec<usize> = p.chunks(&evs).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        // Bytes: "t" + i x's; limit 10 bytes per chunk, but never an empty chunk.
        let p = Producer::new(q).with_batch_limits(100, 10);
        let chunks = p.chunks(&evs);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        for c in &chunks {
            let b: usize = c.iter().map(NewEvent::text_len).sum();
            assert!(c.len() == 1 || b <= 10, "{b}");
        }
        assert!(p.chunks(&[]).is_empty());
    }

    #[test]
    fn a_bad_field_is_named_by_its_position_in_the_call() {
        // The database layer names event 2 of the statement that started at event 5.
        let core = pgq_core::Error::InvalidEventField {
            op: "insert_events",
            index: 2,
            field: "extra3",
            problem: pgq_core::FieldProblem::NulByte,
        };
        let e = Error::from_core("q", "send_batch", core).offset_by(5);
        assert!(matches!(
            e,
            Error::NulByte {
                index: 7,
                field: "extra3",
                ..
            }
        ));
        assert!(e.to_string().contains("event 7: extra3"), "{e}");
        let core = pgq_core::Error::InvalidEventField {
            op: "copy_events",
            index: 3,
            field: "ev_data",
            problem: pgq_core::FieldProblem::TooLarge { len: 9 },
        };
        let e = Error::from_core("q", "copy", core);
        assert!(matches!(
            e,
            Error::TooLarge {
                index: 3,
                field: "ev_data",
                len: 9,
                ..
            }
        ));
    }
}
