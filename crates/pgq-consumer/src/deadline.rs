//! The run loop's client-side deadline on the database: a watchdog over everything the loop
//! awaits between two handler calls (taking a connection, `next_batch`, each row of a streamed
//! batch, opening, retrying, dead-lettering and finishing a batch). The handler's own time does
//! not count: the handlers are wrapped ([`Timed`], [`TimedBatch`]) so that the watchdog pauses
//! while one runs and starts afresh when it returns. The wrappers also contain a handler's
//! panic: it fails the event (or batch) like an error, logged with the event id.
//!
//! Without it, a half-open connection (the network drops packets without a FIN, a middlebox
//! hangs) leaves a statement waiting for an answer that never comes: sqlx's sockets have no TCP
//! keepalive. On expiry the caller drops the connection without reusing it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use pgq_core::{Event, Watchdog, WatchdogPause};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::handler::{BatchHandler, EventContext, Handler, HandlerError};
use crate::source::BatchSource;

/// The watchdog of one run loop ([`pgq_core::Watchdog`]), and the error it fails with.
pub(crate) struct Deadline(Watchdog);

impl Deadline {
    pub(crate) fn new(limit: Duration) -> Arc<Deadline> {
        Arc::new(Deadline(Watchdog::new(limit)))
    }

    /// Start counting afresh from now.
    pub(crate) fn restart(&self) {
        self.0.restart();
    }

    /// Stop counting until the returned guard is dropped (then count afresh).
    fn pause(&self) -> WatchdogPause<'_> {
        self.0.pause()
    }

    /// Resolves once the loop has waited for the database for longer than the limit.
    pub(crate) async fn expired(&self) {
        self.0.expired().await;
    }

    /// Run `fut` (database work of the loop, not a handler) under the deadline, from now.
    pub(crate) async fn guard<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.0.guard(fut).await {
            Some(r) => r,
            None => Err(self.error(what)),
        }
    }

    pub(crate) fn error(&self, what: &'static str) -> Error {
        Error::Unresponsive {
            what,
            after: self.0.limit(),
        }
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
        // A panicking handler fails its event (retried, then dead-lettered) instead of taking
        // the service down.
        match AssertUnwindSafe(self.handler.handle(event, ctx))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(ev_id = event.ev_id, panic = %message, "handler panicked");
                Err(HandlerError::new(HandlerPanicked(message)))
            }
        }
    }
}

/// The failure of an event whose handler panicked.
#[derive(Debug)]
struct HandlerPanicked(String);

impl std::fmt::Display for HandlerPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the handler panicked: {}", self.0)
    }
}

impl std::error::Error for HandlerPanicked {}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes them).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
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
        let id = batch.info().batch_id;
        match AssertUnwindSafe(self.handler.handle_batch(batch))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(batch_id = id.get(), panic = %message, "batch handler panicked");
                Err(HandlerError::new(HandlerPanicked(message)))
            }
        }
    }
}
