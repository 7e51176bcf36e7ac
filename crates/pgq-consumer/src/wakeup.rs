//! Waking the run loop: a background LISTEN on the tick channel, with polling as the fallback.
//!
//! The listener has a connection of its own (opened with the pool's options, outside the pool),
//! pinged when it has been quiet for a while: a half-open connection would otherwise wait for
//! notifications forever, with no error. Each of its statements has the consumer's
//! `database_timeout`; a listener that misses it is dropped and opened again.

use std::sync::Arc;
use std::time::Duration;

use pgq_core::QueueName;
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::{PgListener, PgPoolOptions};
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

/// Dropped without [`Wakeups::stop`] (the run loop's future was dropped): the listener task
/// stops on its own and closes its connection.
impl Drop for Wakeups {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Wakeups {
    /// Start listening for ticks of `queue` (when `enabled`); the task stops with `shutdown`.
    pub(crate) fn start(
        pool: &PgPool,
        queue: &QueueName,
        consumer: &str,
        enabled: bool,
        backoff: Backoff,
        timeout: Duration,
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
                timeout,
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

/// A listener on a pool of its own, on `pool`'s connection options: one connection, taken
/// within `timeout`.
async fn open_listener(pool: &PgPool, timeout: Duration) -> pgq_core::Result<(PgPool, PgListener)> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(timeout)
        // Server-side keepalives: the server ends the session of a partitioned listener.
        .after_connect(|conn, _| {
            Box::pin(async move {
                pgq_core::configure_session(conn, &pgq_core::SessionSettings::default())
                    .await
                    .map_err(|e| pgq_core::sqlx::Error::Configuration(e.into()))
            })
        })
        .connect_lazy_with((*pool.connect_options()).clone());
    let listener = pgq_core::tick_listener(&own).await?;
    Ok((own, listener))
}

/// Close a listener and its pool; a listener whose connection does not answer any more is left
/// to sqlx's own drop (which tries `UNLISTEN` on it, in the background, until the operating system
/// gives up on the socket).
async fn close_listener(own: PgPool, listener: PgListener, timeout: Duration) {
    drop(listener);
    let _ = tokio::time::timeout(timeout, own.close()).await;
}

#[allow(clippy::too_many_arguments)]
async fn listen(
    pool: PgPool,
    queue: QueueName,
    consumer: String,
    notify: Arc<Notify>,
    backoff: Backoff,
    timeout: Duration,
    stop: CancellationToken,
) {
    // A quiet listener is pinged this often (and must answer within `timeout`).
    let ping_every = timeout.min(Duration::from_secs(30));
    let mut failures = 0u32;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(timeout, open_listener(&pool, timeout)) => r,
        };
        let (own, mut listener) = match opened {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(queue = %queue, error = %e, "cannot LISTEN for ticks; polling meanwhile");
                if sleep_or_cancel(backoff.delay(failures), &stop).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
            Err(_) => {
                tracing::warn!(queue = %queue, timeout_ms = timeout.as_millis() as u64,
                    "cannot LISTEN for ticks: the database did not answer in time; polling meanwhile");
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
                _ = stop.cancelled() => {
                    close_listener(own, listener, timeout).await;
                    return;
                }
                r = listener.try_recv() => Some(r),
                _ = tokio::time::sleep(ping_every) => None,
            };
            let Some(r) = r else {
                // Quiet for a while: is anyone there?
                let ping = tokio::select! {
                    _ = stop.cancelled() => {
                        close_listener(own, listener, timeout).await;
                        return;
                    }
                    r = tokio::time::timeout(timeout, pgq_core::backend_pid(&mut listener)) => r,
                };
                match ping {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(queue = %queue, error = %e, "tick listener failed; reconnecting");
                    }
                    Err(_) => {
                        tracing::warn!(queue = %queue, timeout_ms = timeout.as_millis() as u64,
                            "tick listener: the database did not answer in time (a half-open \
                             connection?); dropping the connection and reconnecting");
                    }
                }
                notify.notify_one();
                failures = 1;
                break;
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
        close_listener(own, listener, timeout).await;
        if sleep_or_cancel(backoff.delay(0), &stop).await {
            return;
        }
    }
}
