//! The client-side deadline of a long-running command (`pgq tail --follow`): how long it may wait
//! for the database before it takes the connection for dead. On a half-open connection (the
//! network dropped without a FIN) a statement would otherwise wait for its answer forever.
//!
//! A watchdog over the whole command: [`Watchdog::progress`] restarts the count (an event
//! arrived), [`Watchdog::idle`] stops it while the command waits for something else (ticks).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::CliError;

pub(crate) struct Watchdog {
    limit: Duration,
    /// Since when the command has waited for the database; `None` while it is idle on purpose.
    since: Mutex<Option<Instant>>,
}

impl Watchdog {
    pub(crate) fn new(limit: Duration) -> Watchdog {
        Watchdog {
            limit,
            since: Mutex::new(Some(Instant::now())),
        }
    }

    fn set(&self, since: Option<Instant>) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    /// The database answered: count afresh.
    pub(crate) fn progress(&self) {
        self.set(Some(Instant::now()));
    }

    /// Run `fut` (a wait that is not for the database's answer) without counting its time.
    pub(crate) async fn idle<T>(&self, fut: impl Future<Output = T>) -> T {
        self.set(None);
        let r = fut.await;
        self.progress();
        r
    }

    /// Run `fut`, failing when the database keeps it waiting longer than the limit.
    pub(crate) async fn guard<T>(
        &self,
        fut: impl Future<Output = Result<T, CliError>>,
    ) -> Result<T, TimedOut<CliError>> {
        self.progress();
        tokio::select! {
            r = fut => r.map_err(TimedOut::No),
            () = self.expired() => Err(TimedOut::Yes(CliError::Connect {
                message: format!(
                    "the database did not answer within {} (--db-timeout): the connection looks \
                     dead (a network partition, or the server is stuck); giving up",
                    humantime::format_duration(self.limit)
                ),
            })),
        }
    }

    async fn expired(&self) {
        loop {
            let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
            let wake = match since {
                Some(t) if t.elapsed() >= self.limit => return,
                Some(t) => t + self.limit,
                None => Instant::now() + self.limit,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// An error, and whether it is the watchdog's (then the connection must not be used again).
pub(crate) enum TimedOut<E> {
    Yes(E),
    No(E),
}
