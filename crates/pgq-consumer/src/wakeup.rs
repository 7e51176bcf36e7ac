//! Waking the run loop: a background LISTEN on the tick channel, with polling as the fallback.

use std::sync::Arc;
use std::time::Duration;

use pgq_core::QueueName;
use pgq_core::sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
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

pub(crate) struct Wakeups {
    notify: Arc<Notify>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Wakeups {
    /// Start listening for ticks of `queue` (when `enabled`); the task stops with `shutdown`.
    pub(crate) fn start(
        pool: &PgPool,
        queue: &QueueName,
        consumer: &str,
        enabled: bool,
        backoff: Backoff,
        shutdown: &CancellationToken,
    ) -> Wakeups {
        let notify = Arc::new(Notify::new());
        let stop = shutdown.child_token();
        let task = enabled.then(|| {
            tokio::spawn(listen(
                pool.clone(),
                queue.clone(),
                consumer.to_owned(),
                notify.clone(),
                backoff,
                stop.clone(),
            ))
        });
        Wakeups { notify, stop, task }
    }

    /// Wait for a tick notification, the poll interval, or shutdown.
    pub(crate) async fn wait(&self, poll: Duration, shutdown: &CancellationToken) -> Wake {
        tokio::select! {
            _ = shutdown.cancelled() => Wake::Shutdown,
            _ = self.notify.notified() => Wake::Notified,
            _ = tokio::time::sleep(poll) => Wake::Poll,
        }
    }

    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Sleep for `d` unless `token` is cancelled first; true when cancelled.
pub(crate) async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn listen(
    pool: PgPool,
    queue: QueueName,
    consumer: String,
    notify: Arc<Notify>,
    backoff: Backoff,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = pgq_core::tick_listener(&pool) => l,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "cannot LISTEN for ticks; polling meanwhile");
                if sleep_or_cancel(backoff.delay(failures), &stop).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if std::mem::take(&mut failures) > 0 {
            crate::metrics::listener_reconnect(queue.as_str(), &consumer);
            tracing::info!(queue = %queue, "listening for ticks again");
        }
        // Ticks may have come while we were not listening.
        notify.notify_one();
        loop {
            let r = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.try_recv() => r,
            };
            match r {
                Ok(Some(n)) => {
                    if pgq_core::is_tick_of(&n, &queue) {
                        notify.notify_one();
                    }
                }
                Ok(None) => {
                    // The connection was lost and re-established (LISTEN again included).
                    crate::metrics::listener_reconnect(queue.as_str(), &consumer);
                    tracing::info!(queue = %queue, "tick listener reconnected");
                    notify.notify_one();
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "tick listener failed; reconnecting");
                    notify.notify_one();
                    failures = 1;
                    break;
                }
            }
        }
        drop(listener);
        if sleep_or_cancel(backoff.delay(0), &stop).await {
            return;
        }
    }
}
