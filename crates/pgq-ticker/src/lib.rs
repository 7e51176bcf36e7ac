//! # pgq-ticker
//!
//! The ticker and maintenance daemon for PgQ, as a library and as the `pgq-ticker` binary (a
//! `pgqd` replacement). Per database it runs `pgq.ticker()` on its period, ticks queues with
//! `ticker_max_lag = 0` within milliseconds of a commit, runs maintenance (rotation, vacuum) and
//! the retry mover, holds an advisory lock so one ticker ticks a database at a time (a second
//! one stands by), and isolates databases from each other. Many databases, discovery, pgqd.ini,
//! metrics and health: see the README and `docs/ticker.md`.
//!
//! ```no_run
//! use pgq_ticker::{Args, Config};
//! use clap::Parser;
//!
//! # async fn demo() -> Result<(), pgq_ticker::Error> {
//! let args = Args::parse_from(["pgq-ticker", "--db", "postgres://localhost/app"]);
//! let config = Config::from_args(&args)?;
//! let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! // Ticks until `shutdown` is cancelled; send a new Config on `_reload_tx` to reload.
//! pgq_ticker::run(config, reload_rx, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Roles: the ticking role needs `pgq_admin` (and ownership of the event tables, or superuser,
//! for the `VACUUM` maintenance operations when autovacuum is off).

#![forbid(unsafe_code)]

pub mod config;
mod error;
mod http;
pub mod state;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, Database, Discovery, LogFormat, Periods};
pub use error::{Error, ErrorKind, Result};
pub use pgq_core;
pub use state::{DbState, DbStatus, Phase, Registry, Stats};

struct Running {
    cancel: CancellationToken,
    join: JoinHandle<()>,
    fingerprint: String,
}

/// Run the ticker with `config` until `shutdown` is cancelled (then every session is closed and
/// every ticker lock released) or, with `exit_after_failure`, until a database stays
/// unreachable that long ([`ErrorKind::Unreachable`]). A [`Config`] received on `reload` replaces
/// the current one: databases are added and removed, periods change in place.
pub async fn run(
    config: Config,
    mut reload: mpsc::Receiver<Config>,
    shutdown: CancellationToken,
) -> Result<()> {
    let registry: Registry = Registry::default();
    let stats = Arc::new(Stats::default());
    let http_cancel = shutdown.child_token();
    let metrics = match config.http {
        Some(addr) => {
            let listener = http::bind(addr).await?;
            let handle = http::install_recorder();
            let enabled = handle.is_some();
            match handle {
                Some(h) => {
                    let max_connections = http::max_connections();
                    tracing::info!(%addr, max_connections, "serving /metrics and /health");
                    tokio::spawn(http::serve(
                        listener,
                        h,
                        registry.clone(),
                        max_connections,
                        http_cancel.clone(),
                    ));
                }
                None => {
                    tracing::warn!("a metrics recorder is already installed; /metrics disabled")
                }
            }
            enabled
        }
        None => false,
    };
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(config));
    let mut workers: BTreeMap<String, Running> = BTreeMap::new();
    let mut discovered: Vec<Option<Vec<String>>> = Vec::new();
    let mut next_discovery = Instant::now();
    // The stats line is due a stats period after the last one (or the start): a reload
    // changing the period reschedules it from there.
    let mut last_stats = Instant::now();
    let mut next_stats = last_stats + cfg_tx.borrow().periods.stats;
    let mut failure_check = tokio::time::interval(Duration::from_secs(1));
    failure_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result = loop {
        let cfg = cfg_tx.borrow().clone();
        if Instant::now() >= next_discovery {
            discovered.resize(cfg.discover.len(), None);
            for (i, d) in cfg.discover.iter().enumerate() {
                match discover(d).await {
                    Ok(names) => discovered[i] = Some(names),
                    Err(e) => tracing::warn!(
                        server = %d.base.host_list(),
                        "database discovery failed (keeping the databases already known): {e}"
                    ),
                }
            }
            reconcile(
                &cfg,
                &discovered,
                &mut workers,
                &registry,
                &cfg_rx,
                &stats,
                &shutdown,
                metrics,
            );
            next_discovery = Instant::now() + cfg.periods.check;
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            new = reload.recv() => {
                let Some(new) = new else { continue };
                if new.http != cfg.http {
                    tracing::warn!("the http address cannot change on reload; restart to apply it");
                }
                for note in &new.notes {
                    tracing::warn!("{note}");
                }
                tracing::info!("configuration reloaded");
                next_stats = last_stats + new.periods.stats;
                cfg_tx.send_replace(Arc::new(new));
                discovered.clear();
                next_discovery = Instant::now();
            }
            () = tokio::time::sleep_until(next_discovery.min(next_stats).into()) => {
                if Instant::now() >= next_stats {
                    log_stats(&stats, &registry);
                    last_stats = Instant::now();
                    next_stats = last_stats + cfg.periods.stats;
                }
            }
            _ = failure_check.tick() => {
                if let Some(limit) = cfg.exit_after_failure
                    && let Some(err) = unreachable_too_long(&registry, limit) {
                    break Err(err);
                }
            }
        }
    };
    let joins: Vec<_> = std::mem::take(&mut workers)
        .into_values()
        .map(|r| {
            r.cancel.cancel();
            r.join
        })
        .collect();
    let all = futures_join(joins);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("some database sessions did not close within 10s");
    }
    http_cancel.cancel();
    tracing::info!("stopped");
    result
}

async fn futures_join(joins: Vec<JoinHandle<()>>) {
    for j in joins {
        let _ = j.await;
    }
}

/// List the databases of a discovery server (through its initial database).
async fn discover(d: &Discovery) -> std::result::Result<Vec<String>, String> {
    let db = d.database(&d.initial_database);
    let timeout = Duration::from_secs(30);
    let mut conn = worker::connect(&db, timeout, None).await?;
    let r = worker::within(
        worker::deadline(timeout),
        pgq_core::list_databases(&mut conn),
    )
    .await
    .map_err(|e| e.to_string());
    worker::close(conn).await;
    r
}

#[allow(clippy::too_many_arguments)]
fn reconcile(
    cfg: &Config,
    discovered: &[Option<Vec<String>>],
    workers: &mut BTreeMap<String, Running>,
    registry: &Registry,
    cfg_rx: &watch::Receiver<Arc<Config>>,
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
    metrics: bool,
) {
    let mut desired: BTreeMap<String, Database> = BTreeMap::new();
    for d in &cfg.databases {
        desired.insert(d.label.clone(), d.clone());
    }
    for (d, names) in cfg.discover.iter().zip(discovered) {
        for name in names.iter().flatten() {
            let db = d.database(name);
            desired.entry(db.label.clone()).or_insert(db);
        }
    }
    // Keep workers of a discovery server whose listing failed this time.
    for (i, d) in cfg.discover.iter().enumerate() {
        if discovered.get(i).is_none_or(Option::is_none) {
            let prefix = format!("{}/", d.base.host_list());
            for label in workers.keys().filter(|l| l.starts_with(&prefix)) {
                desired
                    .entry(label.clone())
                    .or_insert_with(|| d.database(&label[prefix.len()..]));
            }
        }
    }
    let stale: Vec<String> = workers
        .iter()
        .filter(|(label, r)| {
            desired
                .get(*label)
                .is_none_or(|d| fingerprint(d) != r.fingerprint)
        })
        .map(|(l, _)| l.clone())
        .collect();
    for label in stale {
        if let Some(r) = workers.remove(&label) {
            tracing::info!(db = %label, "unregister database");
            r.cancel.cancel();
            if let Ok(mut reg) = registry.write() {
                reg.remove(&label);
            }
        }
    }
    for (label, db) in desired {
        if workers.contains_key(&label) {
            continue;
        }
        tracing::info!(db = %label, "register database");
        let state = Arc::new(DbState::new(&label));
        if let Ok(mut reg) = registry.write() {
            reg.insert(label.clone(), state.clone());
        }
        let cancel = shutdown.child_token();
        let fp = fingerprint(&db);
        let join = tokio::spawn(
            worker::Worker {
                db,
                config: cfg_rx.clone(),
                state,
                stats: stats.clone(),
                cancel: cancel.clone(),
                metrics,
            }
            .run(),
        );
        workers.insert(
            label,
            Running {
                cancel,
                join,
                fingerprint: fp,
            },
        );
    }
}

/// Identifies a database's connection settings, to restart its worker when they change.
fn fingerprint(d: &Database) -> String {
    format!("{:?}", d.target)
}

fn unreachable_too_long(registry: &Registry, limit: Duration) -> Option<Error> {
    let reg = registry.read().ok()?;
    reg.values().find_map(|s| {
        let (down_for, last_error) = s.down_for()?;
        (down_for >= limit).then(|| Error::Unreachable {
            database: s.label().to_owned(),
            down_for,
            limit,
            last_error,
        })
    })
}

/// The periodic stats line, like pgqd's `{ticks: N, maint: N, retry: N}`, plus our own figures.
fn log_stats(stats: &Stats, registry: &Registry) {
    let [ticks, fast, maint, retry, moved, errors] = stats.take();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    if let Ok(reg) = registry.read() {
        for s in reg.values() {
            *counts.entry(s.phase().as_str()).or_default() += 1;
        }
    }
    let dbs = counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        target: "pgq_ticker::stats",
        ticks, fast_ticks = fast, maint, retry, retried_events = moved, errors,
        "{{ticks: {ticks}, maint: {maint}, retry: {retry}, fast_ticks: {fast}, retried_events: {moved}, errors: {errors}, databases: {{{dbs}}}}}"
    );
}
