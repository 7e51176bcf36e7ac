//! One database: the ticking session (holds the ticker lock, runs `pgq.ticker()` and the fast
//! path) and the maintenance session (rotation, vacuum, retry mover, statistics), separate so
//! ticking is never stuck behind maintenance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgq_core::sqlx::{Connection as _, PgConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Database};
use crate::state::{DbState, Phase, Stats};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Lag-0 queues without a fast tick for this long count as quiet.
const QUIET: Duration = Duration::from_secs(1);
/// The fast poll runs this many times slower on quiet lag-0 queues.
const IDLE_FACTOR: u32 = 5;

/// Capped exponential backoff with jitter (each delay is 50–150% of the nominal one).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        nominal.mul_f64(0.5 + fastrand::f64())
    }
}

/// Sleep for `d`; `false` when cancelled first.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}

/// How long a stop waits for a running statement to finish on its own before the statement's
/// session is ended from another session.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long ending such sessions may take (connecting included); within the 10 s a stop waits
/// for the workers.
const END_SESSIONS_LIMIT: Duration = Duration::from_secs(6);

/// Run `work` (statements on one session) to its end, unless `stop` is cancelled and it does not
/// end within [`SHUTDOWN_GRACE`]. `None` then: the session is in the middle of a statement and
/// must be ended with [`Worker::end_sessions`] (dropping the connection would leave the statement
/// running on the server, where it can still commit, holding its locks until it does).
async fn unless_stopped<F: std::future::Future>(
    work: F,
    stop: &CancellationToken,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => Some(out),
        () = stop.cancelled() => tokio::time::timeout(SHUTDOWN_GRACE, work).await.ok(),
    }
}

/// How much longer than its server-side `statement_timeout` the ticker waits for a statement's
/// answer before it takes the connection for dead (half-open: the network dropped without a FIN).
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// The client-side deadline of a statement of a session with `statement_timeout`.
pub(crate) fn deadline(statement_timeout: Duration) -> Duration {
    statement_timeout + DEADLINE_GRACE
}

/// The ticking session's `idle_session_timeout`: the server ends the session (and so releases
/// the ticker lock) when it has heard nothing from it for this long, even when TCP still looks
/// alive (a hung middlebox). The keepalive bound, but at least twice the standby retry period (a
/// standby's session sends a statement every `standby_retry`).
pub(crate) fn tick_idle_timeout(db: &Database, cfg: &Config) -> Duration {
    db.keepalives.dead_after().max(cfg.standby_retry * 2)
}

/// A statement that failed, or got no answer in time.
#[derive(Debug)]
pub(crate) enum StmtError {
    Db(pgq_core::Error),
    NoAnswer(Duration),
}

impl std::fmt::Display for StmtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StmtError::Db(e) => e.fmt(f),
            StmtError::NoAnswer(d) => write!(
                f,
                "no answer from the database within {}s (a half-open connection?); the session \
                 is dropped",
                d.as_secs_f64()
            ),
        }
    }
}

impl StmtError {
    fn is_transient(&self) -> bool {
        match self {
            StmtError::Db(e) => e.is_transient(),
            StmtError::NoAnswer(_) => true,
        }
    }
}

/// Await a statement with a client-side deadline: a half-open connection fails it instead of
/// leaving it waiting forever.
pub(crate) async fn within<T>(
    limit: Duration,
    statement: impl std::future::Future<Output = pgq_core::Result<T>>,
) -> Result<T, StmtError> {
    match tokio::time::timeout(limit, statement).await {
        Ok(r) => r.map_err(StmtError::Db),
        Err(_) => Err(StmtError::NoAnswer(limit)),
    }
}

/// Close a session politely, unless that takes longer than a moment (a half-open one never
/// answers): then it is dropped.
pub(crate) async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
}

/// Open a session of `db` with the given `statement_timeout`, its server-side keepalives (see
/// [`pgq_core::configure_session`]) and, when given, `idle_session_timeout`: on the first of
/// its hosts that answers within the connect timeout and matches `target_session_attrs`
/// ([`pgq_core::connect::ConnectTarget::connect_with`]; every reconnect tries them all again).
pub(crate) async fn connect(
    db: &Database,
    statement_timeout: Duration,
    idle_session_timeout: Option<Duration>,
) -> Result<PgConnection, String> {
    let ms = statement_timeout.as_millis().max(1).to_string();
    let target = db
        .target
        .map_options(|o| o.options([("statement_timeout", ms.as_str())]));
    let settings = pgq_core::SessionSettings {
        keepalives: db.keepalives,
        idle_session_timeout,
    };
    target
        .connect_with(&settings)
        .await
        .map_err(|e| pgq_core::redact::redact(&e.to_string()))
}

/// [`connect`], and the session's backend pid (to end it from another session at a stop).
async fn connect_with_pid(
    db: &Database,
    statement_timeout: Duration,
    idle_session_timeout: Option<Duration>,
) -> Result<(PgConnection, i32), String> {
    let mut conn = connect(db, statement_timeout, idle_session_timeout).await?;
    match within(
        deadline(statement_timeout),
        pgq_core::backend_pid(&mut conn),
    )
    .await
    {
        Ok(pid) => Ok((conn, pid)),
        Err(e) => {
            close(conn).await;
            Err(format!("could not set up the session: {e}"))
        }
    }
}

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

enum LoopEnd {
    Cancelled,
    Recycle,
    Failed(String),
}

impl Worker {
    fn cfg(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn label(&self) -> &str {
        &self.db.label
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        Stats::add(&self.stats.errors, 1);
        metrics::counter!("pgq_ticker_errors_total", "db" => self.db.label.clone(), "what" => what.to_owned())
            .increment(1);
        format!("{what}: {e}")
    }

    /// Run until cancelled.
    pub(crate) async fn run(self) {
        let mut backoff = Backoff::new();
        let mut was_down = false;
        let mut standby_logged = false;
        let mut no_pgq_warned = false;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let cfg = self.cfg();
            let idle = tick_idle_timeout(&self.db, &cfg);
            let stmt = deadline(cfg.tick_statement_timeout);
            let (mut conn, tick_pid) =
                match connect_with_pid(&self.db, cfg.tick_statement_timeout, Some(idle)).await {
                    Ok(c) => c,
                    Err(e) => {
                        let e = self.error("connect", e);
                        if !was_down {
                            tracing::warn!(db = self.label(), "{e}; retrying with backoff");
                        } else {
                            tracing::debug!(db = self.label(), "{e}");
                        }
                        was_down = true;
                        self.state.down(e);
                        if !sleep_or_cancel(backoff.next_delay(), &self.cancel).await {
                            break;
                        }
                        continue;
                    }
                };
            let connected_at = Instant::now();
            match within(stmt, pgq_core::pgq_presence(&mut conn)).await {
                Ok(Some(v)) => self.state.set_version(Some(v)),
                Ok(None) => {
                    // A database named explicitly is meant to be ticked: say so, and look again
                    // within seconds (the schema may be installed right after the ticker starts).
                    // A discovered one without pgq is normal and is looked at every check period.
                    let explicit = cfg.databases.iter().any(|d| d.label == self.db.label);
                    let recheck = if explicit {
                        if !no_pgq_warned {
                            tracing::warn!(
                                db = self.label(),
                                "pgq is not installed in this database: nothing to tick until it \
                                 is (run `pgq install`); looking again every {}s",
                                NO_PGQ_RECHECK.as_secs()
                            );
                            no_pgq_warned = true;
                        }
                        NO_PGQ_RECHECK.min(cfg.periods.check)
                    } else {
                        tracing::debug!(db = self.label(), "no pgq in this database");
                        cfg.periods.check
                    };
                    self.state.set(Phase::NoPgq);
                    let _ = conn.close().await;
                    if !sleep_or_cancel(recheck, &self.cancel).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    let e = self.error("pgq check", e);
                    self.state.down(e);
                    let _ = conn.close().await;
                    if !sleep_or_cancel(backoff.next_delay(), &self.cancel).await {
                        break;
                    }
                    continue;
                }
            }
            if was_down {
                tracing::info!(db = self.label(), "database reachable again");
                was_down = false;
            }
            if no_pgq_warned {
                tracing::info!(db = self.label(), "pgq is installed now: ticking");
                no_pgq_warned = false;
            }
            backoff.reset();

            // Take the ticker lock, or stand by.
            let locked = loop {
                match within(
                    stmt,
                    pgq_core::try_ticker_lock(&mut conn, pgq_core::TICKER_LOCK_KEY),
                )
                .await
                {
                    Ok(true) => break Ok(true),
                    Ok(false) => {}
                    Err(e) => break Err(self.error("ticker lock", e)),
                }
                if !standby_logged {
                    let holder = within(
                        stmt,
                        pgq_core::ticker_lock_holder(&mut conn, pgq_core::TICKER_LOCK_KEY),
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
                    standby_logged = true;
                }
                self.state.set(Phase::Standby);
                let cfg = self.cfg();
                if !sleep_or_cancel(cfg.standby_retry, &self.cancel).await {
                    break Ok(false);
                }
                if connected_at.elapsed() >= cfg.periods.connection_lifetime {
                    break Ok(false);
                }
            };
            match locked {
                Ok(true) => {}
                Ok(false) => {
                    let _ = conn.close().await;
                    continue;
                }
                Err(e) => {
                    self.state.down(e);
                    let _ = conn.close().await;
                    if !sleep_or_cancel(backoff.next_delay(), &self.cancel).await {
                        break;
                    }
                    continue;
                }
            }
            if standby_logged {
                tracing::info!(db = self.label(), "took over the ticker lock");
            }
            standby_logged = false;
            tracing::info!(db = self.label(), "ticking");
            self.state.set(Phase::Active);

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
            let Some(end) = end else {
                drop(conn);
                break;
            };
            match end {
                LoopEnd::Cancelled | LoopEnd::Recycle => {
                    let _ = within(
                        stmt,
                        pgq_core::ticker_unlock(&mut conn, pgq_core::TICKER_LOCK_KEY),
                    )
                    .await;
                    close(conn).await;
                    if matches!(end, LoopEnd::Cancelled) {
                        break;
                    }
                    tracing::debug!(
                        db = self.label(),
                        "connection lifetime reached; reconnecting"
                    );
                }
                LoopEnd::Failed(e) => {
                    tracing::warn!(db = self.label(), "{e}; reconnecting");
                    was_down = true;
                    self.state.down(e);
                    drop(conn);
                    if !sleep_or_cancel(backoff.next_delay(), &self.cancel).await {
                        break;
                    }
                }
            }
        }
        self.state.set(Phase::Stopped);
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

    /// Tick on the period, fast-poll `ticker_max_lag = 0` queues in between.
    async fn tick_loop(
        &self,
        conn: &mut PgConnection,
        connected_at: Instant,
        retry_due: &watch::Sender<Option<Instant>>,
    ) -> LoopEnd {
        let cfg = self.cfg();
        // Every statement has a client-side deadline; and the session sends something at least
        // this often, or the server's idle_session_timeout would end it.
        let stmt = deadline(cfg.tick_statement_timeout);
        let keep_alive_every = tick_idle_timeout(&self.db, &cfg) / 3;
        let features = match within(stmt, pgq_core::ticker_features(&mut *conn)).await {
            Ok(f) => f,
            Err(e) => return LoopEnd::Failed(self.error("ticker features", e)),
        };
        // Wake consumers ourselves only when the pgq.tick trigger is missing.
        let notify =
            (!features.tick_trigger && features.fast_tick).then_some(pgq_core::TICK_CHANNEL);
        if !features.tick_trigger && !features.fast_tick {
            tracing::warn!(
                db = self.label(),
                "neither the pgq.tick wakeup trigger nor pgq_rs.fast_tick is installed: consumers \
                 are not woken by NOTIFY and lag-0 queues tick without commit detection; run \
                 `pgq install` (pgq_core::install) on this database"
            );
        }
        let mut lag0 = features.lag0_queues;
        let mut prev_snapshot: Option<String> = None;
        // Poll every fast_poll while lag-0 queues are busy; after a quiet second, every
        // IDLE_FACTOR × fast_poll (the idle cost drops accordingly, the first event after a quiet
        // spell waits at most that long).
        let mut last_fast_tick = Instant::now();
        let mut next_round = Instant::now();
        let mut last_statement = Instant::now();
        loop {
            let cfg = self.cfg();
            if connected_at.elapsed() >= cfg.periods.connection_lifetime {
                return LoopEnd::Recycle;
            }
            let now = Instant::now();
            if now >= next_round {
                let r = match notify {
                    Some(ch) => within(stmt, pgq_core::ticker_round_notify(&mut *conn, ch)).await,
                    None => within(stmt, pgq_core::ticker_round(&mut *conn)).await,
                };
                last_statement = Instant::now();
                match r {
                    Ok(round) => {
                        lag0 = round.lag0_queues;
                        // Tell the maintenance session when the earliest retry is due.
                        let due = round.retry_due_in.map(|d| Instant::now() + d);
                        retry_due.send_if_modified(|v| {
                            let changed = *v != due;
                            *v = due;
                            changed
                        });
                        Stats::add(&self.stats.ticks, 1);
                        self.state.ticked();
                        if self.metrics {
                            metrics::counter!("pgq_ticker_ticks_total", "db" => self.db.label.clone())
                                .increment(1);
                        }
                    }
                    Err(e) => return LoopEnd::Failed(self.error("pgq.ticker()", e)),
                }
                next_round += cfg.periods.ticker;
                if next_round < Instant::now() {
                    next_round = Instant::now() + cfg.periods.ticker;
                }
            }
            let wake = if lag0 > 0 {
                let poll = if last_fast_tick.elapsed() < QUIET {
                    cfg.periods.fast_poll
                } else {
                    cfg.periods.fast_poll * IDLE_FACTOR
                };
                next_round.min(Instant::now() + poll)
            } else {
                next_round
            };
            let wake = wake.min(last_statement + keep_alive_every);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.cancel.cancelled() => return LoopEnd::Cancelled,
            }
            if lag0 == 0
                && Instant::now() < next_round
                && last_statement.elapsed() >= keep_alive_every
            {
                // A long ticker period: show the server the session is alive.
                let ping = async {
                    conn.ping().await.map_err(|e| pgq_core::Error::Database {
                        op: "ping",
                        source: e,
                    })
                };
                if let Err(e) = within(stmt, ping).await {
                    return LoopEnd::Failed(self.error("keepalive ping", e));
                }
                last_statement = Instant::now();
                continue;
            }
            if lag0 > 0 && Instant::now() < next_round {
                let poll = if features.fast_tick {
                    let poll =
                        pgq_core::fast_tick_poll(&mut *conn, notify, prev_snapshot.as_deref());
                    within(stmt, poll).await
                } else {
                    within(stmt, pgq_core::fast_tick_poll_plain(&mut *conn)).await
                };
                last_statement = Instant::now();
                match poll {
                    Ok(p) => {
                        lag0 = p.lag0_queues;
                        prev_snapshot = Some(p.snapshot).filter(|s| !s.is_empty());
                        if !p.ticked.is_empty() {
                            last_fast_tick = Instant::now();
                            Stats::add(&self.stats.fast_ticks, p.ticked.len() as u64);
                            if self.metrics {
                                for (q, _) in &p.ticked {
                                    metrics::counter!("pgq_ticker_fast_ticks_total",
                                        "db" => self.db.label.clone(), "queue" => q.clone())
                                    .increment(1);
                                }
                            }
                        }
                    }
                    Err(e) => return LoopEnd::Failed(self.error("fast tick", e)),
                }
            }
        }
    }
}

/// The maintenance session: retry mover, maintenance operations, statistics.
struct Aux {
    db: Database,
    config: watch::Receiver<Arc<Config>>,
    stats: Arc<Stats>,
    /// Ends the loop after the current round (a new tick session, a stop).
    cancel: CancellationToken,
    /// A stop: the current round gets [`SHUTDOWN_GRACE`] to finish.
    shutdown: CancellationToken,
    metrics: bool,
    /// When the earliest retry event is due, as the tick session last saw it: the retry mover
    /// runs then (at most one tick round late) instead of waiting for its period.
    retry_due: watch::Receiver<Option<Instant>>,
}

impl Aux {
    fn label(&self) -> &str {
        &self.db.label
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        Stats::add(&self.stats.errors, 1);
        metrics::counter!("pgq_ticker_errors_total", "db" => self.db.label.clone(), "what" => what.to_owned())
            .increment(1);
        format!("{what}: {e}")
    }

    /// Run until cancelled. Returns the backend pid of its session when a stop left that session
    /// in the middle of a statement (to be ended by the worker).
    async fn run(mut self) -> Option<i32> {
        let start = Instant::now();
        let (mut next_retry, mut next_maint, mut next_stats) = (start, start, start);
        let mut next_detect = start;
        let mut seen_due: Option<Instant> = None;
        let mut conn: Option<(PgConnection, Instant)> = None;
        let mut pid = 0;
        let mut backoff = Backoff::new();
        loop {
            let cfg = self.config.borrow().clone();
            let due = *self.retry_due.borrow_and_update();
            if due != seen_due {
                seen_due = due;
                if let Some(due) = due {
                    next_retry = next_retry.min(due);
                }
            }
            let wake = next_retry.min(next_maint).min(next_stats);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                // A new due time: look at the schedule again.
                Ok(()) = self.retry_due.changed() => continue,
                () = self.cancel.cancelled() => break,
            }
            if conn
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() >= cfg.periods.connection_lifetime)
                && let Some((c, _)) = conn.take()
            {
                close(c).await;
            }
            if conn.is_none() {
                match connect_with_pid(&self.db, cfg.maint_statement_timeout, None).await {
                    Ok((c, p)) => {
                        backoff.reset();
                        pid = p;
                        conn = Some((c, Instant::now()));
                    }
                    Err(e) => {
                        let e = self.error("maintenance connect", e);
                        tracing::warn!(db = self.label(), "{e}");
                        let retry_at = Instant::now() + backoff.next_delay();
                        next_retry = next_retry.max(retry_at);
                        next_maint = next_maint.max(retry_at);
                        next_stats = next_stats.max(retry_at);
                        continue;
                    }
                }
            }
            let Some((c, _)) = conn.as_mut() else {
                continue;
            };
            let round = async {
                let now = Instant::now();
                let mut failed = false;
                if now >= next_retry {
                    next_retry = now + cfg.periods.retry;
                    match within(
                        deadline(cfg.maint_statement_timeout),
                        pgq_core::maint_retry_events_all(c),
                    )
                    .await
                    {
                        Ok(n) => {
                            Stats::add(&self.stats.retry, 1);
                            Stats::add(&self.stats.retried_events, n as u64);
                            metrics::counter!("pgq_ticker_retry_events_moved_total", "db" => self.db.label.clone())
                                .increment(n as u64);
                            if n > 0 {
                                tracing::debug!(
                                    db = self.label(),
                                    moved = n,
                                    "retry events moved back"
                                );
                            }
                        }
                        Err(e) => {
                            tracing::warn!(db = self.label(), "{}", self.error("retry mover", &e));
                            failed = true;
                        }
                    }
                }
                if !failed && now >= next_maint {
                    next_maint = now + cfg.periods.maint;
                    failed = !self.maintenance(c).await;
                }
                if !failed && now >= next_stats {
                    next_stats = now + cfg.periods.stats;
                    let detect = now >= next_detect;
                    if detect {
                        next_detect = now + cfg.periods.check;
                    }
                    failed = !self.statistics(c, detect).await;
                }
                failed
            };
            let Some(failed) = unless_stopped(round, &self.shutdown).await else {
                // Stopping, and a statement is still running: the worker ends the session.
                return Some(pid);
            };
            if failed && let Some((c, _)) = conn.take() {
                // Statement errors may have left the session unusable; start afresh next time.
                close(c).await;
            }
        }
        if let Some((c, _)) = conn {
            close(c).await;
        }
        None
    }

    /// One maintenance round, as pgqd does it: every operation of `pgq.maint_operations()`,
    /// each repeated while it returns non-zero, every call in its own transaction. Returns
    /// `false` when the session should be replaced.
    async fn maintenance(&self, c: &mut PgConnection) -> bool {
        let stmt = deadline(self.config.borrow().maint_statement_timeout);
        let ops = match within(stmt, pgq_core::maint_operations(&mut *c)).await {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("maint_operations", &e));
                return false;
            }
        };
        for op in &ops {
            let mut runs = 0u32;
            loop {
                if self.cancel.is_cancelled() {
                    return true;
                }
                runs += 1;
                match within(stmt, pgq_core::run_maint_operation(&mut *c, op)).await {
                    Ok(n) => {
                        metrics::counter!("pgq_ticker_maint_operations_total",
                            "db" => self.db.label.clone(), "op" => op.func_name.clone())
                        .increment(1);
                        tracing::debug!(db = self.label(), op = %op.func_name,
                            arg = op.func_arg.as_deref().unwrap_or(""), result = n, "maintenance");
                        // Repeat while non-zero, with a safety cap against a function that
                        // never finishes.
                        if n == 0 || runs >= 10_000 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(db = self.label(), op = %op.func_name,
                            arg = op.func_arg.as_deref().unwrap_or(""),
                            "{}", self.error("maintenance operation", &e));
                        if e.is_transient() {
                            return false;
                        }
                        break;
                    }
                }
            }
        }
        Stats::add(&self.stats.maint, 1);
        true
    }

    /// Warn about other tickers (when `detect`); refresh queue and consumer metrics.
    async fn statistics(&self, c: &mut PgConnection, detect: bool) -> bool {
        let stmt = deadline(self.config.borrow().maint_statement_timeout);
        let others = if detect {
            within(
                stmt,
                pgq_core::other_tickers(&mut *c, pgq_core::TICKER_LOCK_KEY),
            )
            .await
        } else {
            Ok(Vec::new())
        };
        match others {
            Ok(others) => {
                for o in others {
                    tracing::warn!(
                        db = self.label(),
                        pid = o.pid,
                        application_name = %o.application_name,
                        client = o.client_addr.as_deref().unwrap_or("local"),
                        "another ticker (pgqd?) is ticking this database too: run only one"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("ticker detection", &e));
                return !e.is_transient();
            }
        }
        if !self.metrics {
            return true;
        }
        let db = self.db.label.clone();
        match within(stmt, pgq_core::queue_stats(&mut *c)).await {
            Ok(qs) => {
                for q in qs {
                    let l = [("db", db.clone()), ("queue", q.queue_name.clone())];
                    if let Some(lag) = q.tick_lag_secs {
                        metrics::gauge!("pgq_queue_tick_lag_seconds", &l).set(lag);
                    }
                    metrics::gauge!("pgq_queue_events_per_second", &l)
                        .set(q.events_per_sec.unwrap_or(0.0));
                    metrics::gauge!("pgq_queue_new_events", &l).set(q.new_events as f64);
                }
            }
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("queue stats", &e));
                return !e.is_transient();
            }
        }
        match within(stmt, pgq_core::consumer_stats(&mut *c)).await {
            Ok(cs) => {
                // Per queue, its slowest consumer's lag: how late delivery on the queue is.
                let mut worst = std::collections::BTreeMap::<String, f64>::new();
                for s in &cs {
                    if let Some(lag) = s.lag_secs {
                        let w = worst.entry(s.queue_name.clone()).or_insert(lag);
                        *w = w.max(lag);
                    }
                }
                for (queue, lag) in worst {
                    let l = [("db", db.clone()), ("queue", queue)];
                    metrics::gauge!("pgq_queue_delivery_lag_seconds", &l).set(lag);
                }
                for s in cs {
                    let l = [
                        ("db", db.clone()),
                        ("queue", s.queue_name.clone()),
                        ("consumer", s.consumer_name.clone()),
                    ];
                    if let Some(lag) = s.lag_secs {
                        metrics::gauge!("pgq_consumer_lag_seconds", &l).set(lag);
                    }
                    metrics::gauge!("pgq_consumer_pending_events", &l).set(s.pending_events as f64);
                }
            }
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("consumer stats", &e));
                return !e.is_transient();
            }
        }
        // How long the cluster's xmin horizon has been held (0: not held, or by a slot, which
        // has no start time): consumers slow down while it is (see `pgq status`).
        match within(stmt, pgq_core::xmin_horizon_holder(&mut *c)).await {
            Ok(h) => {
                let age = h.and_then(|h| h.held_for).map_or(0.0, |d| d.as_secs_f64());
                metrics::gauge!("pgq_xmin_horizon_age_seconds", "db" => db.clone()).set(age);
            }
            Err(e) if !e.is_transient() => {
                tracing::debug!(db = self.label(), error = %e, "no xmin horizon holder");
            }
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("xmin horizon", &e));
                return false;
            }
        }
        match within(stmt, pgq_core::dead_letter_counts(&mut *c)).await {
            Ok(ds) => {
                for d in ds {
                    let l = [
                        ("db", db.clone()),
                        ("queue", d.queue),
                        ("consumer", d.consumer),
                    ];
                    metrics::gauge!("pgq_dead_letters", &l).set(d.count as f64);
                }
                true
            }
            // A ticker role without pgq_reader (or a schema from before dead letters) exports
            // no dead-letter gauge; that is not a reason to reconnect.
            Err(e) if !e.is_transient() => {
                tracing::debug!(db = self.label(), error = %e, "no dead-letter counts");
                true
            }
            Err(e) => {
                tracing::warn!(
                    db = self.label(),
                    "{}",
                    self.error("dead letter counts", &e)
                );
                false
            }
        }
    }
}
