//! The heartbeat of the run loop: while a batch is in flight, a background task calls the
//! source's [`touch`](BatchSource::touch) on a connection of its own (never the batch's, whose
//! transaction is busy), so a slow handler is not taken for dead.
//!
//! With [`stall_heartbeats`](BatchSource::stall_heartbeats), the heartbeat shows progress, not
//! just life: when no event was read or handled (the consumer's progress counter did not move)
//! for that many heartbeats in a row, it stops touching until the counter moves again, so a hung
//! handler's batch can be taken over.

use std::sync::Arc;
use std::time::Duration;

use pgq_core::sqlx::{ConnectOptions, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Inner;
use crate::source::BatchSource;

pub(crate) struct Heartbeat {
    holding: watch::Sender<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Marks a batch in flight until dropped.
pub(crate) struct Holding<'a>(&'a watch::Sender<bool>);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl Heartbeat {
    /// Start the heartbeat task, when the source has one.
    pub(crate) fn start<S: BatchSource>(inner: &Arc<Inner<S>>) -> Option<Heartbeat> {
        let interval = inner.source.heartbeat_interval()?;
        let (holding, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(beat(inner.clone(), interval, rx, stop.clone()));
        Some(Heartbeat {
            holding,
            stop,
            task,
        })
    }

    /// A batch is in flight until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Holding<'_> {
        self.holding.send_replace(true);
        Holding(&self.holding)
    }

    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

/// Dropped without [`Heartbeat::stop`] (the run loop's future was dropped): the task stops on
/// its own and closes its connection.
impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn beat<S: BatchSource>(
    inner: Arc<Inner<S>>,
    interval: Duration,
    mut holding: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = holding.wait_for(|h| *h) => if r.is_err() { return },
        }
        // A batch is in flight: touch every interval until it is done.
        let stall_limit = inner.source.stall_heartbeats();
        let mut last_progress = inner.progress();
        let mut stalled = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = holding.wait_for(|h| !*h) => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(interval) => {}
            }
            let progress = inner.progress();
            if progress != last_progress {
                last_progress = progress;
                stalled = 0;
            } else {
                stalled = stalled.saturating_add(1);
            }
            if let Some(limit) = stall_limit
                && stalled >= limit
            {
                if stalled == limit {
                    let (queue, consumer) = (inner.source.queue(), inner.source.consumer());
                    tracing::warn!(queue = %queue, consumer = %consumer, heartbeats = stalled,
                        "the handler has made no progress for {stalled} heartbeats: no longer \
                         touching, so the batch can be taken over after the group's dead interval");
                    crate::metrics::error(queue.as_str(), consumer.as_str());
                }
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = touch(&inner, &mut conn) => {}
            }
        }
    }
}

async fn touch<S: BatchSource>(inner: &Inner<S>, conn: &mut Option<PgConnection>) {
    let (queue, consumer) = (inner.source.queue(), inner.source.consumer());
    // Each wait for the database is bounded: a half-open connection is dropped, not waited on.
    let timeout = inner.config.database_timeout;
    if conn.is_none() {
        let options = inner.pool.connect_options();
        let session = async {
            let mut c = options.connect().await.map_err(|e| e.to_string())?;
            // Server-side keepalives: the server ends the session of a partitioned member.
            pgq_core::configure_session(&mut c, &pgq_core::SessionSettings::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        };
        let connected = match tokio::time::timeout(timeout, session).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}s (database_timeout)",
                timeout.as_secs_f64()
            )),
        };
        match connected {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(queue = %queue, consumer = %consumer, error = %e,
                    "heartbeat: cannot connect; will try again");
                crate::metrics::error(queue.as_str(), consumer.as_str());
                return;
            }
        }
    }
    let Some(c) = conn.as_mut() else { return };
    let touched = match tokio::time::timeout(timeout, inner.source.touch(c)).await {
        Ok(r) => r.map_err(crate::Error::from),
        Err(_) => Err(crate::Error::Unresponsive {
            what: "heartbeat",
            after: timeout,
        }),
    };
    if let Err(e) = touched {
        tracing::warn!(queue = %queue, consumer = %consumer, error = %e,
            "heartbeat failed; will try again on a fresh connection");
        crate::metrics::error(queue.as_str(), consumer.as_str());
        *conn = None;
    }
}
