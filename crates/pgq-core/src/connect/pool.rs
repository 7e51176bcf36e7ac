//! Pools that follow a failover: [`ConnectTarget::pool`].
//!
//! sqlx's pool connects to one `PgConnectOptions` and has no hook to choose the host per
//! connection, but it reads its options afresh for every connection attempt
//! ([`PgPool::set_connect_options`]). So a watcher task re-points the pool at the host that
//! matches `target_session_attrs` now, and the pool's hooks tell the watcher when to look:
//!
//! - `before_acquire` checks every pooled connection before handing it out: a ping, or (with a
//!   `target_session_attrs` that can fail) the server's `transaction_read_only` /
//!   `pg_is_in_recovery()`. A dead connection, or one to a server that no longer matches (a
//!   primary made read-only, a standby promoted under a `standby` pool), is discarded and
//!   wakes the watcher.
//! - `after_connect` sets the session up and checks a new connection the same way; a mismatch
//!   (the pool still points at a standby) is refused and wakes the watcher.
//! - Once a second the watcher takes a connection from the pool (when one is idle, or the pool
//!   has room) with a short deadline; a failure wakes it too (a pool pointed at a host that
//!   refuses connections hands out none, and says so to nobody).
//!
//! Woken, the watcher runs through the hosts ([`ConnectTarget::connect_index`]) until one
//! matches, every 250 ms at first, then every second, and points the pool at it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Notify;

use super::{ConnectError, ConnectTarget, HostFailure, TargetSessionAttrs, check_attrs, host_port};
use crate::session::configure_session;

/// How often the watcher looks at a pool that gave no sign of trouble.
const WATCH_PERIOD: Duration = Duration::from_secs(1);
/// How long the watcher's own look at the pool may take before it counts as a failure.
const WATCH_ACQUIRE_LIMIT: Duration = Duration::from_secs(2);
/// The pause between two runs through the hosts while none matches: the first, and the longest.
const SEARCH_PAUSE: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(1));
/// The limit of a connection check, and of each host's connect while searching, when the target
/// has no `connect_timeout`.
const DEFAULT_CHECK_LIMIT: Duration = Duration::from_secs(10);

impl ConnectTarget {
    /// A pool of connections to the host [`connect`](Self::connect) would use now (an error when
    /// none can be used now). Each new connection is set up with the keepalives and checked
    /// against `target_session_attrs`.
    ///
    /// With several hosts or a `target_session_attrs`, the pool follows a failover: every
    /// connection is checked before it is handed out (a dead one, or one to a server that no
    /// longer matches `target_session_attrs`, is discarded), and a watcher task points the pool
    /// at the host that matches now when the pool's host stops working or matching. The check
    /// replaces sqlx's `test_before_acquire` ping and costs the same one round trip. An
    /// `acquire` already waiting on the old host moves on at its next connection attempt (sqlx
    /// retries a refused connection with a pause that grows up to a fifth of the pool's
    /// `acquire_timeout`); the next ones go to the new host at once.
    ///
    /// The watcher holds a handle to the pool and ends when the pool is closed
    /// ([`PgPool::close`]): close a pool from here when done with it.
    ///
    /// `options`' own `after_connect` (and, when following, `before_acquire`) is replaced.
    pub async fn pool(&self, options: PgPoolOptions) -> Result<PgPool, ConnectError> {
        let (conn, index) = self.connect_index(&self.session_settings()).await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        let attrs = self.target_session_attrs;
        // What a connection must match (PreferStandby takes any server in the end).
        let check = (!matches!(
            attrs,
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby
        ))
        .then_some(attrs);
        let follow = self.hosts.len() > 1 || attrs != TargetSessionAttrs::Any;
        let limit = self.connect_timeout.unwrap_or(DEFAULT_CHECK_LIMIT);
        let look = Arc::new(Notify::new());
        let settings = self.session_settings();
        let wake = look.clone();
        let mut options = options.after_connect(move |conn, _| {
            let wake = wake.clone();
            Box::pin(async move {
                let setup = async {
                    configure_session(conn, &settings)
                        .await
                        .map_err(|e| HostFailure::Error(e.to_string(), false))?;
                    match check {
                        Some(attrs) => check_attrs(conn, attrs).await,
                        None => Ok(()),
                    }
                };
                setup.await.map_err(|e| {
                    wake.notify_one();
                    sqlx::Error::Configuration(e.message().into())
                })
            })
        });
        if follow {
            let wake = look.clone();
            options = options
                .test_before_acquire(false)
                .before_acquire(move |conn, _| {
                    let wake = wake.clone();
                    Box::pin(async move {
                        let test = async {
                            match check {
                                Some(attrs) => check_attrs(conn, attrs).await,
                                None => conn
                                    .ping()
                                    .await
                                    .map_err(|e| HostFailure::Error(e.to_string(), false)),
                            }
                        };
                        match tokio::time::timeout(limit, test).await {
                            Ok(Ok(())) => Ok(true),
                            // Alive, but the server does not match any more: close it politely.
                            Ok(Err(HostFailure::NoMatch(m))) => {
                                tracing::debug!("pool: discarding a connection: the server {m}");
                                wake.notify_one();
                                Ok(false)
                            }
                            Ok(Err(HostFailure::Error(m, _))) => {
                                wake.notify_one();
                                Err(sqlx::Error::Configuration(m.into()))
                            }
                            Err(_) => {
                                wake.notify_one();
                                Err(sqlx::Error::Configuration(
                                    "the connection did not answer its check in time".into(),
                                ))
                            }
                        }
                    })
                });
        }
        let pool = options.connect_lazy_with(self.hosts[index].clone());
        if follow {
            let target = self
                .clone()
                .with_default_connect_timeout(DEFAULT_CHECK_LIMIT);
            tokio::spawn(watch_pool(Arc::new(target), pool.clone(), look));
        }
        Ok(pool)
    }
}

/// Keep `pool` pointed at a matching host (see [`ConnectTarget::pool`]); `look` wakes it.
async fn watch_pool(target: Arc<ConnectTarget>, pool: PgPool, look: Arc<Notify>) {
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        let woken = tokio::select! {
            () = &mut closed => return,
            () = look.notified() => true,
            () = tokio::time::sleep(WATCH_PERIOD) => false,
        };
        if !woken {
            // Every connection busy: the pool works (a broken one wakes us when it comes back).
            if pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections() {
                continue;
            }
            let limit =
                WATCH_ACQUIRE_LIMIT.min(target.connect_timeout.unwrap_or(WATCH_ACQUIRE_LIMIT));
            if let Ok(Ok(_)) = tokio::time::timeout(limit, pool.acquire()).await {
                continue;
            }
        }
        // Run through the hosts until one matches.
        let mut pause = SEARCH_PAUSE.0;
        loop {
            match target.connect_index(&target.session_settings()).await {
                Ok((conn, i)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                    let current = pool.connect_options();
                    let next = &target.hosts[i];
                    if host_port(&current) != host_port(next) {
                        tracing::info!(
                            from = %host_port(&current),
                            to = %host_port(next),
                            "pool: switching to the host that matches target_session_attrs"
                        );
                        pool.set_connect_options(next.clone());
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!("pool: no matching host yet: {e}");
                    tokio::select! {
                        () = &mut closed => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(SEARCH_PAUSE.1);
                }
            }
        }
    }
}
