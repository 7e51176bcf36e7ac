//! One database: the ticking session (holds the ticker lock, runs `pgq.ticker()` and the fast
//! path) and the maintenance session (rotation, vacuum, retry mover, statistics), separate so
//! ticking is never stuck behind maintenance.

mod maintenance;
mod session;
mod tick_loop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgq_core::sqlx::PgConnection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Database};
use crate::state::{DbState, Phase, Stats};
use maintenance::Aux;
use session::{
    Backoff, END_SESSIONS_LIMIT, connect_with_pid, count_error, sleep_or_cancel, tick_idle_timeout,
    unless_stopped,
};
pub(crate) use session::{close, connect, deadline, within};

/// How soon a database named explicitly (not discovered) is looked at again while it has no pgq.
const NO_PGQ_RECHECK: Duration = Duration::from_secs(2);

/// Everything a worker needs.
pub(crate) struct Worker {
    pub(crate) db: Database,
    pub(crate) config: watch::Receiver<Arc<Config>>,
    pub(crate) state: Arc<DbState>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) cancel: CancellationToken,
    pub(crate) metrics: bool,
}

/// How the tick loop of a session ended.
enum LoopEnd {
    Cancelled,
    Recycle,
    Failed(String),
}

/// What to do after a ticking session (or an attempt at one) ended.
enum Next {
    /// Connect again at once (the connection lifetime was reached).
    Reconnect,
    /// Look again after this long (the database has no pgq).
    After(Duration),
    /// The database is down or the session failed: mark it down, look again after the backoff.
    Down(String),
    /// The worker stops.
    Stop,
}

/// What the worker remembers from one session to the next (for its backoff, and to log changes
/// once).
struct Progress {
    backoff: Backoff,
    was_down: bool,
    standby_logged: bool,
    no_pgq_warned: bool,
}

impl Worker {
    fn cfg(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn label(&self) -> &str {
        &self.db.label
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        count_error(&self.stats, &self.db.label, what, e)
    }

    /// Run until cancelled.
    pub(crate) async fn run(self) {
        let mut p = Progress {
            backoff: Backoff::new(),
            was_down: false,
            standby_logged: false,
            no_pgq_warned: false,
        };
        while !self.cancel.is_cancelled() {
            let wait = match self.session(&mut p).await {
                Next::Stop => break,
                Next::Reconnect => continue,
                Next::After(wait) => wait,
                Next::Down(e) => {
                    self.state.down(e);
                    p.backoff.next_delay()
                }
            };
            if !sleep_or_cancel(wait, &self.cancel).await {
                break;
            }
        }
        self.state.set(Phase::Stopped);
    }

    /// One ticking session: connect, check for pgq, take the ticker lock (or stand by), tick
    /// until the session ends.
    async fn session(&self, p: &mut Progress) -> Next {
        let cfg = self.cfg();
        let idle = tick_idle_timeout(&self.db, &cfg);
        let stmt = deadline(cfg.tick_statement_timeout);
        let (mut conn, tick_pid) =
            match connect_with_pid(&self.db, cfg.tick_statement_timeout, Some(idle)).await {
                Ok(c) => c,
                Err(e) => {
                    let e = self.error("connect", e);
                    if !p.was_down {
                        tracing::warn!(db = self.label(), "{e}; retrying with backoff");
                    } else {
                        tracing::debug!(db = self.label(), "{e}");
                    }
                    p.was_down = true;
                    return Next::Down(e);
                }
            };
        let connected_at = Instant::now();
        match within(stmt, pgq_core::pgq_presence(&mut conn)).await {
            Ok(Some(v)) => self.state.set_version(Some(v)),
            Ok(None) => {
                let recheck = self.no_pgq(&cfg, p);
                self.state.set(Phase::NoPgq);
                close(conn).await;
                return Next::After(recheck);
            }
            Err(e) => {
                close(conn).await;
                return Next::Down(self.error("pgq check", e));
            }
        }
        if p.was_down {
            tracing::info!(db = self.label(), "database reachable again");
            p.was_down = false;
        }
        if p.no_pgq_warned {
            tracing::info!(db = self.label(), "pgq is installed now: ticking");
            p.no_pgq_warned = false;
        }
        p.backoff.reset();
        match self
            .take_lock(&mut conn, stmt, connected_at, &mut p.standby_logged)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                close(conn).await;
                return Next::Reconnect;
            }
            Err(e) => {
                close(conn).await;
                return Next::Down(e);
            }
        }
        if p.standby_logged {
            tracing::info!(db = self.label(), "took over the ticker lock");
        }
        p.standby_logged = false;
        tracing::info!(db = self.label(), "ticking");
        self.state.set(Phase::Active);
        let next = self.tick(conn, tick_pid, connected_at, stmt).await;
        if matches!(next, Next::Down(_)) {
            p.was_down = true;
        }
        next
    }

    /// No pgq in the database: say so (once) and return how soon to look again. A database named
    /// explicitly is meant to be ticked: it is looked at again within seconds (the schema may be
    /// installed right after the ticker starts). A discovered one without pgq is normal and is
    /// looked at every check period.
    fn no_pgq(&self, cfg: &Config, p: &mut Progress) -> Duration {
        let explicit = cfg.databases.iter().any(|d| d.label == self.db.label);
        if !explicit {
            tracing::debug!(db = self.label(), "no pgq in this database");
            return cfg.periods.check;
        }
        if !p.no_pgq_warned {
            tracing::warn!(
                db = self.label(),
                "pgq is not installed in this database: nothing to tick until it is (run `pgq \
                 install`); looking again every {}s",
                NO_PGQ_RECHECK.as_secs()
            );
            p.no_pgq_warned = true;
        }
        NO_PGQ_RECHECK.min(cfg.periods.check)
    }

    /// Take the ticker lock on `conn`, or stand by (retrying every `standby_retry`) while another
    /// ticker holds it. `Ok(false)`: stopped, or the connection lifetime was reached.
    async fn take_lock(
        &self,
        conn: &mut PgConnection,
        stmt: Duration,
        connected_at: Instant,
        standby_logged: &mut bool,
    ) -> Result<bool, String> {
        loop {
            match within(
                stmt,
                pgq_core::try_ticker_lock(&mut *conn, pgq_core::TICKER_LOCK_KEY),
            )
            .await
            {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => return Err(self.error("ticker lock", e)),
            }
            if !*standby_logged {
                let holder = within(
                    stmt,
                    pgq_core::ticker_lock_holder(&mut *conn, pgq_core::TICKER_LOCK_KEY),
                )
                .await
                .ok()
                .flatten();
                match holder {
                    Some(h) => tracing::info!(
                        db = self.label(),
                        pid = h.pid,
                        application_name = %h.application_name,
                        client = h.client_addr.as_deref().unwrap_or("local"),
                        "another ticker holds the ticker lock; standing by"
                    ),
                    None => tracing::info!(
                        db = self.label(),
                        "another ticker holds the ticker lock; standing by"
                    ),
                }
                *standby_logged = true;
            }
            self.state.set(Phase::Standby);
            let cfg = self.cfg();
            if !sleep_or_cancel(cfg.standby_retry, &self.cancel).await {
                return Ok(false);
            }
            if connected_at.elapsed() >= cfg.periods.connection_lifetime {
                return Ok(false);
            }
        }
    }

    /// Tick on `conn` (which holds the ticker lock) with a maintenance session beside it, until
    /// the session ends; then release the lock, or end the sessions a stop left in the middle of a
    /// statement.
    async fn tick(
        &self,
        mut conn: PgConnection,
        tick_pid: i32,
        connected_at: Instant,
        stmt: Duration,
    ) -> Next {
        let aux_cancel = self.cancel.child_token();
        let (retry_due_tx, retry_due) = watch::channel(None);
        let aux = tokio::spawn(
            Aux {
                db: self.db.clone(),
                config: self.config.clone(),
                stats: self.stats.clone(),
                cancel: aux_cancel.clone(),
                shutdown: self.cancel.clone(),
                metrics: self.metrics,
                retry_due,
            }
            .run(),
        );
        let end = unless_stopped(
            self.tick_loop(&mut conn, connected_at, &retry_due_tx),
            &self.cancel,
        )
        .await;
        aux_cancel.cancel();
        // Sessions left in the middle of a statement by a stop: end them before this worker
        // (and so the process) stops, or their statements could commit afterwards and the
        // ticking session would keep the ticker lock until its statement ends.
        let abandoned: Vec<i32> = end
            .is_none()
            .then_some(tick_pid)
            .into_iter()
            .chain(aux.await.ok().flatten())
            .collect();
        if !abandoned.is_empty() {
            self.end_sessions(&abandoned).await;
        }
        match end {
            None => Next::Stop,
            Some(end @ (LoopEnd::Cancelled | LoopEnd::Recycle)) => {
                let _ = within(
                    stmt,
                    pgq_core::ticker_unlock(&mut conn, pgq_core::TICKER_LOCK_KEY),
                )
                .await;
                close(conn).await;
                if matches!(end, LoopEnd::Cancelled) {
                    return Next::Stop;
                }
                tracing::debug!(
                    db = self.label(),
                    "connection lifetime reached; reconnecting"
                );
                Next::Reconnect
            }
            Some(LoopEnd::Failed(e)) => {
                tracing::warn!(db = self.label(), "{e}; reconnecting");
                Next::Down(e)
            }
        }
    }

    /// End this database's sessions `pids`, left in the middle of a statement by a stop, from a
    /// new session (`pg_terminate_backend`), and wait until they are gone: their statements are
    /// rolled back and their locks (the ticker lock) released, so nothing of theirs commits after
    /// the ticker has stopped and a standby can take over at once.
    async fn end_sessions(&self, pids: &[i32]) {
        let ended = async {
            let mut side = connect(&self.db, END_SESSIONS_LIMIT, None).await?;
            let r = async {
                pgq_core::end_sessions(&mut side, pids).await?;
                loop {
                    if pgq_core::live_sessions(&mut side, pids).await?.is_empty() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            .await
            .map_err(|e: pgq_core::Error| e.to_string());
            close(side).await;
            r
        };
        match tokio::time::timeout(END_SESSIONS_LIMIT, ended).await {
            Ok(Ok(())) => tracing::info!(
                db = self.label(),
                ?pids,
                "stopping: cancelled the statements still running (their sessions were ended)"
            ),
            Ok(Err(e)) => tracing::warn!(
                db = self.label(),
                ?pids,
                "{}; their statements may still complete after the stop",
                self.error("ending sessions at stop", e)
            ),
            Err(_) => tracing::warn!(
                db = self.label(),
                ?pids,
                "{}; their statements may still complete after the stop",
                self.error(
                    "ending sessions at stop",
                    format!("not done within {}s", END_SESSIONS_LIMIT.as_secs())
                )
            ),
        }
    }
}
