//! The client-side deadline of a long-running command (`pgq tail --follow`): how long it may wait
//! for the database before it takes the connection for dead ([`pgq_core::Watchdog`]). On a
//! half-open connection (the network dropped without a FIN) a statement would otherwise wait for
//! its answer forever.
//!
//! A watchdog over the whole command: [`Watchdog::progress`] restarts the count (an event
//! arrived), [`Watchdog::idle`] stops it while the command waits for something else (ticks).

use std::future::Future;
use std::time::Duration;

use crate::error::CliError;

pub(crate) struct Watchdog(pgq_core::Watchdog);

impl Watchdog {
    pub(crate) fn new(limit: Duration) -> Watchdog {
        Watchdog(pgq_core::Watchdog::new(limit))
    }

    /// The database answered: count afresh.
    pub(crate) fn progress(&self) {
        self.0.restart();
    }

    /// Run `fut` (a wait that is not for the database's answer) without counting its time.
    pub(crate) async fn idle<T>(&self, fut: impl Future<Output = T>) -> T {
        self.0.idle(fut).await
    }

    /// Run `fut`, failing when the database keeps it waiting longer than the limit.
    pub(crate) async fn guard<T>(
        &self,
        fut: impl Future<Output = Result<T, CliError>>,
    ) -> Result<T, TimedOut<CliError>> {
        match self.0.guard(fut).await {
            Some(r) => r.map_err(TimedOut::No),
            None => Err(TimedOut::Yes(CliError::Connect {
                message: format!(
                    "the database did not answer within {} (--db-timeout): the connection looks \
                     dead (a network partition, or the server is stuck); giving up",
                    humantime::format_duration(self.0.limit())
                ),
            })),
        }
    }
}

/// An error, and whether it is the watchdog's (then the connection must not be used again).
pub(crate) enum TimedOut<E> {
    Yes(E),
    No(E),
}
