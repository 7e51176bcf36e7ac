//! The maintenance session of a database: the retry mover, maintenance operations (rotation,
//! vacuum) and statistics, on their own session so that ticking never waits for them.

use std::sync::Arc;
use std::time::Instant;

use pgq_core::sqlx::PgConnection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::session::{
    Backoff, close, connect_with_pid, count_error, deadline, unless_stopped, within,
};
use crate::config::{Config, Database};
use crate::state::Stats;

/// The maintenance session: retry mover, maintenance operations, statistics.
pub(super) struct Aux {
    pub(super) db: Database,
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) stats: Arc<Stats>,
    /// Ends the loop after the current round (a new tick session, a stop).
    pub(super) cancel: CancellationToken,
    /// A stop: the current round gets [`super::session::SHUTDOWN_GRACE`] to finish.
    pub(super) shutdown: CancellationToken,
    pub(super) metrics: bool,
    /// When the earliest retry event is due, as the tick session last saw it: the retry mover
    /// runs then (at most one tick round late) instead of waiting for its period.
    pub(super) retry_due: watch::Receiver<Option<Instant>>,
}

impl Aux {
    fn label(&self) -> &str {
        &self.db.label
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        count_error(&self.stats, &self.db.label, what, e)
    }

    /// Run until cancelled. Returns the backend pid of its session when a stop left that session
    /// in the middle of a statement (to be ended by the worker).
    pub(super) async fn run(mut self) -> Option<i32> {
        let start = Instant::now();
        let (mut next_retry, mut next_maint, mut next_stats) = (start, start, start);
        let mut next_detect = start;
        // When each job last ran: a reloaded period applies from there.
        let (mut last_retry, mut last_maint, mut last_stats) = (None, None, None);
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
                // Reloaded (SIGHUP): each job is due one new period after its last run.
                Ok(()) = self.config.changed() => {
                    let p = self.config.borrow_and_update().periods;
                    for (next, last, period) in [
                        (&mut next_retry, last_retry, p.retry),
                        (&mut next_maint, last_maint, p.maint),
                        (&mut next_stats, last_stats, p.stats),
                    ] {
                        if let Some(last) = last {
                            *next = last + period;
                        }
                    }
                    continue;
                }
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
                    last_retry = Some(now);
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
                    last_maint = Some(now);
                    next_maint = now + cfg.periods.maint;
                    failed = !self.maintenance(c).await;
                }
                if !failed && now >= next_stats {
                    last_stats = Some(now);
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
