//! The heartbeat of the run loop: while a batch is in flight, a background task calls the
//! source's [`touch`](BatchSource::touch) on a connection of its own (never the batch's, whose
//! transaction is busy), so a slow handler is not taken for dead.

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

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
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
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = touch(&inner, &mut conn) => {}
            }
        }
    }
}

async fn touch<S: BatchSource>(inner: &Inner<S>, conn: &mut Option<PgConnection>) {
    let (queue, consumer) = (inner.source.queue(), inner.source.consumer());
    if conn.is_none() {
        match inner.pool.connect_options().connect().await {
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
    if let Err(e) = inner.source.touch(c).await {
        tracing::warn!(queue = %queue, consumer = %consumer, error = %e,
            "heartbeat failed; will try again on a fresh connection");
        crate::metrics::error(queue.as_str(), consumer.as_str());
        *conn = None;
    }
}
