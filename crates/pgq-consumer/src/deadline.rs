//! The run loop's client-side deadline on the database: a watchdog over everything the loop
//! awaits between two handler calls (taking a connection, `next_batch`, each row of a streamed
//! batch, opening, retrying, dead-lettering and finishing a batch). The handler's own time does
//! not count: the handlers are wrapped ([`Timed`], [`TimedBatch`]) so that the watchdog pauses
//! while one runs and starts afresh when it returns.
//!
//! Without it, a half-open connection (the network drops packets without a FIN, a middlebox
//! hangs) leaves a statement waiting for an answer that never comes: sqlx's sockets have no TCP
//! keepalive. On expiry the caller drops the connection without reusing it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgq_core::Event;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::handler::{BatchHandler, EventContext, Handler, HandlerError};
use crate::source::BatchSource;

/// The watchdog of one run loop.
pub(crate) struct Deadline {
    limit: Duration,
    /// Since when the loop has waited for the database; `None` while a handler runs.
    since: Mutex<Option<Instant>>,
}

impl Deadline {
    pub(crate) fn new(limit: Duration) -> Arc<Deadline> {
        Arc::new(Deadline {
            limit,
            since: Mutex::new(Some(Instant::now())),
        })
    }

    fn set(&self, since: Option<Instant>) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    /// Start counting afresh from now.
    pub(crate) fn restart(&self) {
        self.set(Some(Instant::now()));
    }

    /// Stop counting until the returned guard is dropped (then count afresh).
    fn pause(&self) -> Paused<'_> {
        self.set(None);
        Paused(self)
    }

    /// Resolves once the loop has waited for the database for longer than the limit.
    pub(crate) async fn expired(&self) {
        loop {
            let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
            let wake = match since {
                Some(t) if t.elapsed() >= self.limit => return,
                Some(t) => t + self.limit,
                // A handler runs: look again later.
                None => Instant::now() + self.limit,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    /// Run `fut` (database work of the loop, not a handler) under the deadline, from now.
    pub(crate) async fn guard<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.restart();
        tokio::select! {
            r = fut => r,
            () = self.expired() => Err(self.error(what)),
        }
    }

    pub(crate) fn error(&self, what: &'static str) -> Error {
        Error::Unresponsive {
            what,
            after: self.limit,
        }
    }
}

struct Paused<'a>(&'a Deadline);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.restart();
    }
}

/// A per-event handler whose time the deadline does not count.
pub(crate) struct Timed<H> {
    pub(crate) handler: H,
    pub(crate) deadline: Arc<Deadline>,
}

impl<H: Handler> Handler for Timed<H> {
    async fn handle(&self, event: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let _paused = self.deadline.pause();
        self.handler.handle(event, ctx).await
    }
}

/// A per-batch handler whose time (its reads of the batch included) the deadline does not
/// count.
pub(crate) struct TimedBatch<H> {
    pub(crate) handler: H,
    pub(crate) deadline: Arc<Deadline>,
}

impl<S: BatchSource, H: BatchHandler<S>> BatchHandler<S> for TimedBatch<H> {
    async fn handle_batch(&self, batch: &mut Batch<'_, S>) -> Result<(), HandlerError> {
        let _paused = self.deadline.pause();
        self.handler.handle_batch(batch).await
    }
}
