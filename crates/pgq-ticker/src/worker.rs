//! One database: the ticking session (holds the ticker lock, runs `pgq.ticker()` and the fast
//! path) and the maintenance session (rotation, vacuum, retry mover, statistics), separate so
//! ticking is never stuck behind maintenance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgq_core::sqlx::{self, Connection as _, PgConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Database};
use crate::state::{DbState, Phase, Stats};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Open a session with the given `statement_timeout`.
pub(crate) async fn connect(
    options: &sqlx::postgres::PgConnectOptions,
    statement_timeout: Duration,
) -> Result<PgConnection, String> {
    let ms = statement_timeout.as_millis().max(1).to_string();
    let opts = options
        .clone()
        .options([("statement_timeout", ms.as_str())]);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("could not connect: {e}")),
        Err(_) => Err(format!(
            "could not connect: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

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
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let cfg = self.cfg();
            let mut conn = match connect(&self.db.options, cfg.tick_statement_timeout).await {
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
            match pgq_core::pgq_presence(&mut conn).await {
                Ok(Some(v)) => self.state.set_version(Some(v)),
                Ok(None) => {
                    tracing::debug!(db = self.label(), "no pgq in this database");
                    self.state.set(Phase::NoPgq);
                    let _ = conn.close().await;
                    if !sleep_or_cancel(cfg.periods.check, &self.cancel).await {
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
            backoff.reset();

            // Take the ticker lock, or stand by.
            let locked = loop {
                match pgq_core::try_ticker_lock(&mut conn, pgq_core::TICKER_LOCK_KEY).await {
                    Ok(true) => break Ok(true),
                    Ok(false) => {}
                    Err(e) => break Err(self.error("ticker lock", e)),
                }
                if !standby_logged {
                    let holder = pgq_core::ticker_lock_holder(&mut conn, pgq_core::TICKER_LOCK_KEY)
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
            let aux = tokio::spawn(
                Aux {
                    db: self.db.clone(),
                    config: self.config.clone(),
                    stats: self.stats.clone(),
                    cancel: aux_cancel.clone(),
                    metrics: self.metrics,
                }
                .run(),
            );
            let end = self.tick_loop(&mut conn, connected_at).await;
            aux_cancel.cancel();
            let _ = aux.await;
            match end {
                LoopEnd::Cancelled | LoopEnd::Recycle => {
                    let _ = pgq_core::ticker_unlock(&mut conn, pgq_core::TICKER_LOCK_KEY).await;
                    let _ = conn.close().await;
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

    /// Tick on the period, fast-poll `ticker_max_lag = 0` queues in between.
    async fn tick_loop(&self, conn: &mut PgConnection, connected_at: Instant) -> LoopEnd {
        let features = match pgq_core::ticker_features(&mut *conn).await {
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
        loop {
            let cfg = self.cfg();
            if connected_at.elapsed() >= cfg.periods.connection_lifetime {
                return LoopEnd::Recycle;
            }
            let now = Instant::now();
            if now >= next_round {
                let r = match notify {
                    Some(ch) => pgq_core::ticker_round_notify(&mut *conn, ch).await,
                    None => pgq_core::ticker_round(&mut *conn).await,
                };
                match r {
                    Ok(round) => {
                        lag0 = round.lag0_queues;
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
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.cancel.cancelled() => return LoopEnd::Cancelled,
            }
            if lag0 > 0 && Instant::now() < next_round {
                let poll = if features.fast_tick {
                    pgq_core::fast_tick_poll(&mut *conn, notify, prev_snapshot.as_deref()).await
                } else {
                    pgq_core::fast_tick_poll_plain(&mut *conn).await
                };
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
    cancel: CancellationToken,
    metrics: bool,
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

    async fn run(self) {
        let start = Instant::now();
        let (mut next_retry, mut next_maint, mut next_stats) = (start, start, start);
        let mut next_detect = start;
        let mut conn: Option<(PgConnection, Instant)> = None;
        let mut backoff = Backoff::new();
        loop {
            let cfg = self.config.borrow().clone();
            let wake = next_retry.min(next_maint).min(next_stats);
            if !sleep_or_cancel(wake.saturating_duration_since(Instant::now()), &self.cancel).await
            {
                break;
            }
            if conn
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() >= cfg.periods.connection_lifetime)
                && let Some((c, _)) = conn.take()
            {
                let _ = c.close().await;
            }
            if conn.is_none() {
                match connect(&self.db.options, cfg.maint_statement_timeout).await {
                    Ok(c) => {
                        backoff.reset();
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
            let now = Instant::now();
            let mut failed = false;
            if now >= next_retry {
                next_retry = now + cfg.periods.retry;
                match pgq_core::maint_retry_events_all(c).await {
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
            if failed && let Some((c, _)) = conn.take() {
                // Statement errors may have left the session unusable; start afresh next time.
                let _ = c.close().await;
            }
        }
        if let Some((c, _)) = conn {
            let _ = c.close().await;
        }
    }

    /// One maintenance round, as pgqd does it: every operation of `pgq.maint_operations()`,
    /// each repeated while it returns non-zero, every call in its own transaction. Returns
    /// `false` when the session should be replaced.
    async fn maintenance(&self, c: &mut PgConnection) -> bool {
        let ops = match pgq_core::maint_operations(&mut *c).await {
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
                match pgq_core::run_maint_operation(&mut *c, op).await {
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
        let others = if detect {
            pgq_core::other_tickers(&mut *c, pgq_core::TICKER_LOCK_KEY).await
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
        match pgq_core::queue_stats(&mut *c).await {
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
        match pgq_core::consumer_stats(&mut *c).await {
            Ok(cs) => {
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
                true
            }
            Err(e) => {
                tracing::warn!(db = self.label(), "{}", self.error("consumer stats", &e));
                !e.is_transient()
            }
        }
    }
}
