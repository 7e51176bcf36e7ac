//! Shared state: per-database status (for health and `--exit-after-failure`) and the counters of
//! the periodic stats line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a database's worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Connecting (first time or after a failure).
    Connecting,
    /// Unreachable or failing; retrying with backoff.
    Down,
    /// Reachable but without pgq; looked at again every check period.
    NoPgq,
    /// Another ticker holds the ticker lock; standing by to take over.
    Standby,
    /// Holding the lock and ticking.
    Active,
    /// Stopped (shutdown or removed from the configuration).
    Stopped,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Down => "down",
            Phase::NoPgq => "no_pgq",
            Phase::Standby => "standby",
            Phase::Active => "active",
            Phase::Stopped => "stopped",
        }
    }
}

/// A snapshot of one database's status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbStatus {
    /// The database label.
    pub database: String,
    /// Current phase.
    pub state: Phase,
    /// Seconds in the current phase.
    pub state_secs: f64,
    /// Seconds since the database became unreachable (`None`: it is not).
    pub down_secs: Option<f64>,
    /// Seconds since the last successful ticker round.
    pub last_tick_secs: Option<f64>,
    /// The last error, if the database is down.
    pub last_error: Option<String>,
    /// The installed pgq version, once known.
    pub pgq_version: Option<String>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    since: Instant,
    down_since: Option<Instant>,
    last_tick: Option<Instant>,
    last_error: Option<String>,
    pgq_version: Option<String>,
}

/// The live status of one database, updated by its worker.
#[derive(Debug)]
pub struct DbState {
    label: String,
    inner: Mutex<Inner>,
}

impl DbState {
    pub(crate) fn new(label: &str) -> DbState {
        DbState {
            label: label.to_owned(),
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                since: Instant::now(),
                down_since: None,
                last_tick: None,
                last_error: None,
                pgq_version: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database label.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn set(&self, phase: Phase) {
        let mut i = self.lock();
        if i.phase != phase {
            i.phase = phase;
            i.since = Instant::now();
        }
        if phase != Phase::Down && phase != Phase::Connecting {
            i.down_since = None;
            i.last_error = None;
        }
        metrics::gauge!("pgq_ticker_database_up", "db" => self.label.clone()).set(
            if matches!(phase, Phase::Active | Phase::Standby | Phase::NoPgq) {
                1.0
            } else {
                0.0
            },
        );
        metrics::gauge!("pgq_ticker_database_active", "db" => self.label.clone())
            .set(if phase == Phase::Active { 1.0 } else { 0.0 });
    }

    pub(crate) fn down(&self, error: String) {
        self.set(Phase::Down);
        let mut i = self.lock();
        i.down_since.get_or_insert_with(Instant::now);
        i.last_error = Some(error);
    }

    pub(crate) fn ticked(&self) {
        self.lock().last_tick = Some(Instant::now());
    }

    pub(crate) fn set_version(&self, v: Option<String>) {
        self.lock().pgq_version = v;
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// How long the database has been unreachable, with the last error.
    pub fn down_for(&self) -> Option<(Duration, String)> {
        let i = self.lock();
        i.down_since
            .map(|s| (s.elapsed(), i.last_error.clone().unwrap_or_default()))
    }

    /// A snapshot for health reports.
    pub fn status(&self) -> DbStatus {
        let i = self.lock();
        DbStatus {
            database: self.label.clone(),
            state: i.phase,
            state_secs: i.since.elapsed().as_secs_f64(),
            down_secs: i.down_since.map(|s| s.elapsed().as_secs_f64()),
            last_tick_secs: i.last_tick.map(|s| s.elapsed().as_secs_f64()),
            last_error: i.last_error.clone(),
            pgq_version: i.pgq_version.clone(),
        }
    }
}

/// Every database's state, by label.
pub type Registry = Arc<RwLock<BTreeMap<String, Arc<DbState>>>>;

/// Counters of the periodic stats line (reset at each line, like pgqd's).
#[derive(Debug, Default)]
pub struct Stats {
    /// Ticker rounds (`pgq.ticker()` calls) that succeeded.
    pub ticks: AtomicU64,
    /// Ticks made by the fast path for `ticker_max_lag = 0` queues.
    pub fast_ticks: AtomicU64,
    /// Maintenance rounds completed.
    pub maint: AtomicU64,
    /// Retry rounds completed.
    pub retry: AtomicU64,
    /// Retry events moved back into queues.
    pub retried_events: AtomicU64,
    /// Errors (connection and statement failures).
    pub errors: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Take the counters and reset them: `(ticks, fast_ticks, maint, retry, retried, errors)`.
    pub fn take(&self) -> [u64; 6] {
        [
            &self.ticks,
            &self.fast_ticks,
            &self.maint,
            &self.retry,
            &self.retried_events,
            &self.errors,
        ]
        .map(|c| c.swap(0, Ordering::Relaxed))
    }
}
