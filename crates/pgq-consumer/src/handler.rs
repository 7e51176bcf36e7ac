//! Handlers: what the run loop calls, per event ([`Handler`]) or per batch ([`BatchHandler`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use pgq_core::sqlx::PgConnection;
use pgq_core::{BatchInfo, Event};

use crate::batch::Batch;
use crate::error::BoxError;
use crate::source::{BatchSource, Subscription};

/// What the run loop does with an event whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureAction {
    /// Retry after the policy's backoff; past `max_retries`, dead-letter it.
    Retry,
    /// Retry after this delay; past `max_retries`, dead-letter it.
    RetryAfter(Duration),
    /// Dead-letter it now, without retrying (the event can never succeed).
    DeadLetter,
}

/// A handler's failure: the error and what to do with the event.
///
/// Any `std::error::Error + Send + Sync` converts with `?` (retry with backoff); use
/// [`HandlerError::new`] for other error types (e.g. `anyhow::Error`).
pub struct HandlerError {
    error: BoxError,
    action: FailureAction,
}

impl HandlerError {
    /// Retry the event with the policy's backoff.
    pub fn new(error: impl Into<BoxError>) -> Self {
        HandlerError {
            error: error.into(),
            action: FailureAction::Retry,
        }
    }

    /// Retry the event after `delay`.
    pub fn retry_after(error: impl Into<BoxError>, delay: Duration) -> Self {
        HandlerError {
            error: error.into(),
            action: FailureAction::RetryAfter(delay),
        }
    }

    /// Dead-letter the event now: retrying cannot help.
    pub fn dead_letter(error: impl Into<BoxError>) -> Self {
        HandlerError {
            error: error.into(),
            action: FailureAction::DeadLetter,
        }
    }

    /// What to do with the event.
    pub fn action(&self) -> FailureAction {
        self.action
    }

    /// The error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error and its sources, joined with `: ` (what a dead letter records as its reason).
    pub fn reason(&self) -> String {
        let mut s = self.error.to_string();
        let mut src = self.error.source();
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::new(e)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("error", &self.error)
            .field("action", &self.action)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// What a per-event handler gets besides the event.
pub struct EventContext<'a> {
    pub(crate) conn: Option<&'a mut PgConnection>,
    pub(crate) batch: &'a BatchInfo,
}

impl EventContext<'_> {
    /// The batch's transaction, with [`crate::Delivery::ExactlyOnce`]: write here, and the
    /// writes commit together with the batch (and roll back if the handler fails). `None` with
    /// at-least-once delivery.
    pub fn transaction(&mut self) -> Option<&mut PgConnection> {
        self.conn.as_deref_mut()
    }

    /// The batch the event belongs to.
    pub fn batch(&self) -> &BatchInfo {
        self.batch
    }
}

/// A per-event handler for [`crate::Consumer::run`].
///
/// ```
/// use pgq_consumer::{EventContext, Handler, HandlerError};
/// use pgq_core::Event;
///
/// struct Print;
///
/// impl Handler for Print {
///     async fn handle(&self, ev: &Event, _ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
///         println!("{} {:?}", ev.ev_id, ev.ev_data);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync {
    /// Handle one event. An error retries it (or dead-letters it, see [`HandlerError`]).
    fn handle(
        &self,
        event: &Event,
        ctx: &mut EventContext<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// An exactly-once handler for [`crate::Consumer::run_exactly_once`]: it gets the batch's
/// transaction itself, not an `Option`. Its writes there commit together with the batch's finish
/// and roll back when it fails.
///
/// ```
/// use pgq_consumer::{ExactlyOnceHandler, HandlerError};
/// use pgq_core::{Event, sqlx::{self, PgConnection}};
///
/// struct Ledger;
///
/// impl ExactlyOnceHandler for Ledger {
///     async fn handle(&self, ev: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
///         sqlx::query("insert into ledger (ev_id) values ($1)")
///             .bind(ev.ev_id)
///             .execute(&mut *tx)
///             .await?;
///         Ok(())
///     }
/// }
/// ```
pub trait ExactlyOnceHandler: Send + Sync {
    /// Handle one event, writing through `tx`. An error retries it (or dead-letters it).
    fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Runs an [`ExactlyOnceHandler`] as a [`Handler`] (the run loop checked the delivery mode).
pub(crate) struct InTransaction<H>(pub(crate) H);

impl<H: ExactlyOnceHandler> Handler for InTransaction<H> {
    async fn handle(&self, event: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        match ctx.transaction() {
            Some(tx) => self.0.handle(event, tx).await,
            None => Err(HandlerError::new(
                "internal error: an exactly-once handler ran without the batch's transaction",
            )),
        }
    }
}

/// A per-batch handler for [`crate::Consumer::run_batches`]: it reads the batch itself
/// ([`Batch::next_event`], [`Batch::next_chunk`]) and may retry events ([`Batch::retry`]); the
/// run loop finishes the batch when it returns `Ok`. It must read the batch to the end (or call
/// [`Batch::skip_rest`] / [`Batch::retry_rest`]); otherwise the batch fails.
///
/// When it fails, its transaction is rolled back and every event of the batch is retried with
/// the policy's backoff (events past `max_retries` are dead-lettered), then the batch is finished.
pub trait BatchHandler<S: BatchSource = Subscription>: Send + Sync {
    /// Handle one batch.
    fn handle_batch(
        &self,
        batch: &mut Batch<'_, S>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A per-event handler made from an async closure taking the event by value (at-least-once use:
/// it gets no transaction). See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

/// Make a [`Handler`] from an async closure: `handler_fn(|ev| async move { ...; Ok(()) })`.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        event: &Event,
        _ctx: &mut EventContext<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.0)(event.clone())
    }
}

impl<H: Handler> Handler for std::sync::Arc<H> {
    fn handle(
        &self,
        event: &Event,
        ctx: &mut EventContext<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(event, ctx)
    }
}
