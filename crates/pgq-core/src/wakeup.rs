//! Consumer wakeups: LISTEN/NOTIFY on new ticks.
//!
//! Our migrations install a trigger on `pgq.tick` that sends `NOTIFY pgq_tick` with
//! the queue name as payload for every new tick, whoever inserts it (pgq-ticker, pgqd, a manual
//! `pgq.ticker()`). PostgreSQL delivers notifications at commit and drops duplicates within one
//! transaction, so a ticker round costs one notification per ticked queue; producers never
//! NOTIFY. A consumer LISTENs on [`TICK_CHANNEL`] and keeps polling as a fallback, since
//! notifications sent while its listening connection is down are lost: [`TickWakeups`] does both,
//! and reconnects (the consumer runtime and `pgq tail --follow` wait with it); [`tick_listener`]
//! is the bare listener.
//!
//! Roles: listening needs no pgq role.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use sqlx::{Connection as _, PgExecutor, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::connect::ConnectTarget;
use crate::error::{Op, Result, ResultExt};
use crate::name::QueueName;
use crate::session::SessionSettings;

/// The channel the `pgq.tick` trigger notifies on; the payload is the queue name.
///
/// A queue name is at most 63 bytes, so it always fits a notification payload; the channel name
/// is fixed, so it fits PostgreSQL's 63-byte identifier limit whatever the queue is called.
pub const TICK_CHANNEL: &str = "pgq_tick";

const LISTEN: Op = Op::public("listen");

/// A [`PgListener`] on `pool` that listens on [`TICK_CHANNEL`].
///
/// The listener holds one connection of `pool` for as long as it lives. When that connection is
/// lost, `try_recv` reconnects and listens again before returning `Ok(None)`: ticks in between
/// were missed, so check for batches then. Needs no pgq role.
pub async fn tick_listener(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.op(LISTEN)?;
    listener.listen(TICK_CHANNEL).await.op(LISTEN)?;
    Ok(listener)
}

/// Whether `notification` announces a new tick of `queue`.
pub fn is_tick_of(notification: &PgNotification, queue: &QueueName) -> bool {
    notification.channel() == TICK_CHANNEL && notification.payload() == queue.as_str()
}

/// Send the tick notification for `queue` by hand (what the `pgq.tick` trigger does), e.g. after
/// ticking a database where the trigger is not installed. Delivered when the transaction commits.
/// Needs no pgq role.
pub async fn notify_tick<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<()> {
    const OP: Op = Op::public("notify_tick");
    sqlx::query!("select pg_notify($1, $2)", TICK_CHANNEL, queue.as_str())
        .execute(ex)
        .await
        .op(OP)?;
    Ok(())
}

/// Whether the `pgq.tick` wakeup trigger is installed (by [`crate::install`]) and enabled in this
/// database: a disabled trigger wakes nobody, so it counts as missing, as it does for the ticker.
/// Without it consumers only wake by polling. Needs no pgq role.
pub async fn tick_trigger_installed<'e>(ex: impl PgExecutor<'e>) -> Result<bool> {
    const OP: Op = Op::public("tick_trigger_installed");
    crate::tick::tick_trigger_enabled(ex, OP).await
}

/// Where a [`TickWakeups`] opens its listening connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListenVia {
    /// A connection of its own (outside the pool, so it takes none of the pool's slots) with the
    /// pool's current connect options. A pool of [`ConnectTarget::pool`] is pointed at another
    /// host after a failover: the listener moves with it.
    Pool(PgPool),
    /// The host that [`ConnectTarget::connect`] picks, picked again at every reconnect.
    Target(ConnectTarget),
}

/// How a [`TickWakeups`] listens and reconnects.
#[derive(Clone)]
pub struct WakeupSettings {
    timeout: Duration,
    backoff: Arc<dyn Fn(u32) -> Duration + Send + Sync>,
    on_reconnect: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for WakeupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeupSettings")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WakeupSettings {
    /// Every wait of the listener for the database (connecting and `LISTEN` included) is bounded
    /// by `timeout`; a quiet listener is pinged every `timeout` (at most every 30 s) and must
    /// answer within it, so a half-open connection is noticed. Reconnects pause 100 ms, doubling
    /// per failure in a row up to 30 s ([`backoff`](Self::backoff) changes that).
    pub fn new(timeout: Duration) -> WakeupSettings {
        WakeupSettings {
            timeout,
            backoff: Arc::new(|failures| {
                Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(10))
                    .min(Duration::from_secs(30))
            }),
            on_reconnect: None,
        }
    }

    /// The pause before reconnecting after `failures` failures in a row (0: the connection was
    /// lost, nothing failed yet).
    pub fn backoff(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.backoff = Arc::new(delay);
        self
    }

    /// Called whenever the listener is listening again after losing its connection (for a
    /// metric).
    pub fn on_reconnect(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_reconnect = Some(Arc::new(f));
        self
    }
}

/// Why [`TickWakeups::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// A tick of the queue, or the listener is back after a reconnect (ticks may have been
    /// missed in between): look for a batch.
    Notified,
    /// The poll interval passed.
    Poll,
}

/// Wakeups on new ticks of one queue, with polling as the fallback: a background task LISTENs
/// on [`TICK_CHANNEL`] and reconnects, with backoff, whenever its connection is lost, does not
/// answer within the settings' timeout, or (with [`ListenVia::Pool`]) the pool moved to another
/// host. Dropping it (or [`stop`](Self::stop)) ends the task and closes its connection.
///
/// Needs no pgq role. A `TickWakeups` must be made inside a tokio runtime.
#[derive(Debug)]
pub struct TickWakeups {
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for TickWakeups {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TickWakeups {
    /// Listen for ticks of `queue` through `via`.
    pub fn start(via: ListenVia, queue: QueueName, settings: WakeupSettings) -> TickWakeups {
        let notify = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(listen(via, queue, settings, notify.clone(), stopped));
        TickWakeups {
            notify,
            stop,
            task: Some(task),
        }
    }

    /// No listening: [`wait`](Self::wait) only polls.
    pub fn polling() -> TickWakeups {
        TickWakeups {
            notify: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            task: None,
        }
    }

    /// Wait for a tick of the queue (or a reconnect of the listener), at most `poll`.
    pub async fn wait(&self, poll: Duration) -> Wake {
        tokio::select! {
            () = self.notify.notified() => Wake::Notified,
            () = tokio::time::sleep(poll) => Wake::Poll,
        }
    }

    /// Stop listening and wait for the task to close its connection.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A listener's own one-connection pool and the options it was opened with.
struct Opened {
    own: PgPool,
    listener: PgListener,
    options: Arc<PgConnectOptions>,
}

/// The connect options to listen with now, and the session settings.
async fn listen_options(
    via: &ListenVia,
) -> std::result::Result<(Arc<PgConnectOptions>, SessionSettings), String> {
    match via {
        ListenVia::Pool(pool) => Ok((pool.connect_options(), SessionSettings::default())),
        ListenVia::Target(target) => {
            let settings = target.session_settings();
            let (conn, i) = target
                .connect_index(&settings)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
            Ok((Arc::new(target.hosts()[i].clone()), settings))
        }
    }
}

/// Listen on a one-connection pool of its own with `options`.
async fn open(
    options: Arc<PgConnectOptions>,
    settings: SessionSettings,
    timeout: Duration,
) -> std::result::Result<Opened, String> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(timeout)
        // Server-side keepalives: the server ends the session of a partitioned listener.
        .after_connect(move |conn, _| {
            Box::pin(async move {
                crate::configure_session(conn, &settings)
                    .await
                    .map_err(|e| sqlx::Error::Configuration(e.into()))
            })
        })
        .connect_lazy_with((*options).clone());
    let listening = async {
        let mut listener = PgListener::connect_with(&own).await?;
        // A lost connection is this task's to reconnect: to the host that is right now.
        listener.eager_reconnect(false);
        listener.listen(TICK_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listening.await {
        Ok(listener) => Ok(Opened {
            own,
            listener,
            options,
        }),
        Err(e) => {
            let _ = tokio::time::timeout(timeout, own.close()).await;
            Err(crate::redact::redact(&e.to_string()))
        }
    }
}

/// Pick the host, and listen there, within `timeout`; `Ok(None)` when the pool of `via` moved to
/// another host meanwhile (sqlx's pool keeps retrying a host that refuses connections until its
/// timeout: it is not waited for once the pool has moved on).
async fn open_via(
    via: &ListenVia,
    timeout: Duration,
) -> std::result::Result<Option<Opened>, String> {
    let attempt = async {
        let (options, settings) = listen_options(via).await?;
        let moved_away = async {
            while !moved(via, &options) {
                tokio::time::sleep(MOVE_CHECK).await;
            }
        };
        tokio::select! {
            r = open(options.clone(), settings, timeout) => r.map(Some),
            () = moved_away => Ok(None),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the database did not answer within {}",
            crate::duration::format_duration(timeout)
        )),
    }
}

/// Close a listener and its pool; a listener whose connection does not answer any more is left
/// to sqlx's own drop (which tries `UNLISTEN` on it, in the background, until the operating
/// system gives up on the socket).
async fn close(opened: Opened, timeout: Duration) {
    drop(opened.listener);
    let _ = tokio::time::timeout(timeout, opened.own.close()).await;
}

/// Whether `via` is a pool pointed elsewhere than `options` now.
fn moved(via: &ListenVia, options: &Arc<PgConnectOptions>) -> bool {
    matches!(via, ListenVia::Pool(pool) if !Arc::ptr_eq(&pool.connect_options(), options))
}

/// How often a listener looks whether its pool moved.
const MOVE_CHECK: Duration = Duration::from_millis(250);

async fn listen(
    via: ListenVia,
    queue: QueueName,
    settings: WakeupSettings,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = settings.timeout;
    // A quiet listener is pinged this often (and must answer within `timeout`).
    let ping_every = timeout.min(Duration::from_secs(30));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let mut failures = 0u32;
    loop {
        let opened = tokio::select! {
            () = &mut stopped => return,
            r = open_via(&via, timeout) => r,
        };
        let mut opened = match opened {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::info!(queue = %queue, "the pool moved to another host; listening there");
                failures = failures.max(1);
                continue;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(queue = %queue, error = %e, "cannot LISTEN for ticks; polling meanwhile");
                } else {
                    tracing::debug!(queue = %queue, error = %e, "cannot LISTEN for ticks yet");
                }
                tokio::select! {
                    () = &mut stopped => return,
                    () = tokio::time::sleep((settings.backoff)(failures)) => {}
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if std::mem::take(&mut failures) > 0 {
            if let Some(f) = &settings.on_reconnect {
                f();
            }
            tracing::info!(queue = %queue, "listening for ticks again");
        }
        // Ticks may have come while we were not listening.
        notify.notify_one();
        let mut quiet_since = tokio::time::Instant::now();
        let pause = loop {
            let r = tokio::select! {
                () = &mut stopped => {
                    close(opened, timeout).await;
                    return;
                }
                r = opened.listener.try_recv() => Some(r),
                () = tokio::time::sleep(MOVE_CHECK) => None,
            };
            match r {
                Some(Ok(Some(n))) => {
                    quiet_since = tokio::time::Instant::now();
                    if is_tick_of(&n, &queue) {
                        notify.notify_one();
                    }
                    continue;
                }
                Some(Ok(None)) => {
                    tracing::warn!(queue = %queue, "tick listener lost its connection; reconnecting");
                    break true;
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %crate::redact::redact(&e.to_string()),
                        "tick listener failed; reconnecting");
                    break true;
                }
                None => {}
            }
            if moved(&via, &opened.options) {
                tracing::info!(queue = %queue, "the pool moved to another host; listening there");
                break false;
            }
            if quiet_since.elapsed() < ping_every {
                continue;
            }
            // Quiet for a while: is anyone there?
            let ping = tokio::select! {
                () = &mut stopped => {
                    close(opened, timeout).await;
                    return;
                }
                r = tokio::time::timeout(timeout, crate::backend_pid(&mut opened.listener)) => r,
            };
            match ping {
                Ok(Ok(_)) => quiet_since = tokio::time::Instant::now(),
                Ok(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %e, "tick listener failed; reconnecting");
                    break true;
                }
                Err(_) => {
                    tracing::warn!(queue = %queue, timeout_ms = timeout.as_millis() as u64,
                        "tick listener: the database did not answer in time (a half-open \
                         connection?); dropping the connection and reconnecting");
                    break true;
                }
            }
        };
        notify.notify_one();
        failures = 1;
        close(opened, timeout).await;
        if pause {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep((settings.backoff)(0)) => {}
            }
        }
    }
}
