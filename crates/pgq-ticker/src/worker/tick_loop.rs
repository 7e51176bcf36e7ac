//! The ticking session's loop: `pgq.ticker()` on the ticker period, and the fast poll of
//! `ticker_max_lag = 0` queues in between.

use std::time::{Duration, Instant};

use pgq_core::sqlx::PgConnection;
use tokio::sync::watch;

use super::session::{deadline, tick_idle_timeout, within};
use super::{LoopEnd, Worker};
use crate::state::Stats;

/// Lag-0 queues without a fast tick for this long count as quiet.
const QUIET: Duration = Duration::from_secs(1);
/// The fast poll runs this many times slower on quiet lag-0 queues.
const IDLE_FACTOR: u32 = 5;

/// Every fast tick wakes each consumer of the queue for a batch: with many consumers, fast ticks
/// are spaced this much per consumer (on the lag-0 queue with the most), so that the batches
/// they cause stay near a thousand a second whatever the number of consumers, ...
const GAP_PER_CONSUMER: Duration = Duration::from_millis(1);
/// ... but never more than pgqd's shortest practical period.
const GAP_MAX: Duration = Duration::from_millis(10);
/// How often the consumers of lag-0 queues are counted (it reads `pgq.subscription`).
const COUNT_CONSUMERS_EVERY: Duration = Duration::from_secs(10);

/// The spacing of fast ticks for `consumers` consumers on one lag-0 queue.
fn fast_tick_gap(consumers: i64) -> Duration {
    GAP_PER_CONSUMER
        .saturating_mul(u32::try_from(consumers.max(0)).unwrap_or(u32::MAX))
        .min(GAP_MAX)
}

impl Worker {
    /// Tick on the period, fast-poll `ticker_max_lag = 0` queues in between.
    pub(super) async fn tick_loop(
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
        // When the last round was due: a reloaded ticker period applies from there.
        let mut last_round: Option<Instant> = None;
        let mut config = self.config.clone();
        config.mark_unchanged();
        let mut last_statement = Instant::now();
        let mut gap = Duration::ZERO;
        let mut counted_at: Option<Instant> = None;
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
                last_round = Some(next_round);
                next_round += cfg.periods.ticker;
                if next_round < Instant::now() {
                    next_round = Instant::now() + cfg.periods.ticker;
                }
            }
            if lag0 > 0 && counted_at.is_none_or(|at| at.elapsed() >= COUNT_CONSUMERS_EVERY) {
                counted_at = Some(Instant::now());
                // Pacing only: a failure here leaves the spacing as it was.
                match within(stmt, pgq_core::lag0_consumers(&mut *conn)).await {
                    Ok(n) => {
                        let new = fast_tick_gap(n);
                        if new != gap {
                            tracing::info!(
                                db = self.label(),
                                consumers = n,
                                "lag-0 queues: fast ticks at least {} apart ({n} consumers on one queue)",
                                humantime::format_duration(new)
                            );
                            gap = new;
                        }
                    }
                    Err(e) => tracing::debug!(db = self.label(), "counting consumers: {e}"),
                }
                last_statement = Instant::now();
            }
            let wake = if lag0 > 0 {
                let poll = if last_fast_tick.elapsed() < QUIET {
                    cfg.periods.fast_poll
                } else {
                    cfg.periods.fast_poll * IDLE_FACTOR
                };
                // Many consumers: the next fast tick no sooner than `gap` after the last one.
                let poll =
                    poll.max((last_fast_tick + gap).saturating_duration_since(Instant::now()));
                next_round.min(Instant::now() + poll)
            } else {
                next_round
            };
            let wake = wake.min(last_statement + keep_alive_every);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                // Reloaded (SIGHUP): the next round is due one new period after the last one.
                Ok(()) = config.changed() => {
                    if let Some(last) = last_round {
                        next_round = last + config.borrow_and_update().periods.ticker;
                    }
                    continue;
                }
                () = self.cancel.cancelled() => return LoopEnd::Cancelled,
            }
            if lag0 == 0
                && Instant::now() < next_round
                && last_statement.elapsed() >= keep_alive_every
            {
                // A long ticker period: show the server the session is alive.
                if let Err(e) = within(stmt, pgq_core::ping(&mut *conn)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_grows_with_consumers_up_to_the_cap() {
        assert_eq!(fast_tick_gap(0), Duration::ZERO);
        assert_eq!(fast_tick_gap(-1), Duration::ZERO);
        assert_eq!(fast_tick_gap(1), Duration::from_millis(1));
        assert_eq!(fast_tick_gap(4), Duration::from_millis(4));
        assert_eq!(fast_tick_gap(10), GAP_MAX);
        assert_eq!(fast_tick_gap(i64::MAX), GAP_MAX);
    }
}
