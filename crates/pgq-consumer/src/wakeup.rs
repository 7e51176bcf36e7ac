//! Waking the run loop: core's [`TickWakeups`] (a background LISTEN on the tick channel that
//! reconnects by itself, with polling as the fallback), stopped with the run loop.
//!
//! The listener has a connection of its own (opened with the pool's current options, outside the
//! pool, so it follows a pool of `ConnectTarget::pool` to a new primary), pinged when it has been
//! quiet for a while: a half-open connection would otherwise wait for notifications forever, with
//! no error. Each of its statements has the consumer's `database_timeout`; a listener that misses
//! it is dropped and opened again.

use std::time::Duration;

use pgq_core::sqlx::PgPool;
use pgq_core::{ListenVia, QueueName, TickWakeups, WakeupSettings};
use tokio_util::sync::CancellationToken;

use crate::config::Backoff;

/// Why the run loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A tick notification (or a listener reconnect, after which ticks may have been missed).
    Notified,
    /// The poll interval passed.
    Poll,
    /// Shutdown.
    Shutdown,
}

/// The run loop's wakeups. Dropped without [`Wakeups::stop`] (the run loop's future was
/// dropped): the listener task stops on its own and closes its connection.
pub(crate) struct Wakeups(TickWakeups);

impl Wakeups {
    /// Start listening for ticks of `queue` (when `enabled`). The listener stops with
    /// [`Wakeups::stop`] (the run loop calls it once `shutdown` ended the loop).
    pub(crate) fn start(
        pool: &PgPool,
        queue: &QueueName,
        consumer: &str,
        enabled: bool,
        backoff: Backoff,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Wakeups {
        if shutdown.is_cancelled() {
            return Wakeups(TickWakeups::polling());
        }
        if !enabled {
            return Wakeups(TickWakeups::polling());
        }
        let (q, c) = (queue.as_str().to_owned(), consumer.to_owned());
        let settings = WakeupSettings::new(timeout)
            .backoff(move |failures| backoff.delay(failures))
            .on_reconnect(move || crate::metrics::listener_reconnect(&q, &c));
        Wakeups(TickWakeups::start(
            ListenVia::Pool(pool.clone()),
            queue.clone(),
            settings,
        ))
    }

    /// Wait for a tick notification, the poll interval, or shutdown.
    pub(crate) async fn wait(&self, poll: Duration, shutdown: &CancellationToken) -> Wake {
        tokio::select! {
            _ = shutdown.cancelled() => Wake::Shutdown,
            w = self.0.wait(poll) => match w {
                pgq_core::Wake::Poll => Wake::Poll,
                _ => Wake::Notified,
            },
        }
    }

    pub(crate) async fn stop(self) {
        self.0.stop().await;
    }
}

/// Sleep for `d` unless `token` is cancelled first; true when cancelled.
pub(crate) async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
