//! What the benchmark programs in `bench/programs/` share: starting pgq-ticker and pgqd beside a
//! private cluster (pgq-testkit's wrappers), the clock the events carry, percentiles and CPU from
//! /proc.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{SystemTime, UNIX_EPOCH};

use pgq_testkit::{Cluster, Pgqd, TickerOptions, TickerProc};
use sqlx::{Connection as _, PgConnection};

/// The error type of the benchmark programs.
pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The pgq-ticker binary: `PGQ_TICKER_BIN`, or next to this example's directory.
pub(crate) fn ticker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGQ_TICKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("pgq-ticker"))
        .expect("target dir")
}

/// A child process, stopped (SIGTERM) and reaped when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// The ticker of a run: pgq-ticker or pgqd, killed when dropped.
pub(crate) enum Ticker {
    /// pgq-ticker.
    Ours(TickerProc),
    /// pgqd.
    Pgqd(Pgqd),
}

impl Ticker {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Ticker::Ours(t) => t.pid(),
            Ticker::Pgqd(p) => p.pid(),
        }
    }
}

/// Start pgq-ticker with `args` (warnings on stderr).
pub(crate) fn spawn_ticker(args: &[&str]) -> Ticker {
    let bin = ticker_bin();
    assert!(
        bin.is_file(),
        "{} is missing: build it with --release first (or set PGQ_TICKER_BIN)",
        bin.display()
    );
    let options = TickerOptions {
        rust_log: "warn".to_owned(),
        echo: true,
        ..TickerOptions::default()
    };
    Ticker::Ours(TickerProc::start(bin, args, &options))
}

/// Start pgqd on every database of the cluster at `port`, ticking every `ticker_period` seconds.
pub(crate) fn spawn_pgqd(port: u16, ticker_period: &str) -> Ticker {
    Ticker::Pgqd(Pgqd::start(&format!(
        "base_connstr = host=127.0.0.1 port={port} user=postgres application_name=pgqd\n\
         initial_database = postgres\nticker_period = {ticker_period}\nsyslog = 0\n"
    )))
}

/// Microseconds since the epoch: what the benchmark producers put in an event's data.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Create database `name` in `cluster` with pgq installed (on the backend `PGQ_TEST_BACKEND`
/// names, the extension by default); its URL.
pub(crate) async fn private_db(cluster: &Cluster, name: &str) -> Res<String> {
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let url = cluster.url(name);
    let mut c = PgConnection::connect(&url).await?;
    // PGQ_TEST_BACKEND=sql: our SQL backend instead of the extension (as the test kit does).
    let backend = pgq_core::InstallOptions::new().backend(Some(pgq_testkit::test_backend()));
    pgq_core::install_with(&mut c, &backend).await?;
    c.close().await?;
    Ok(url)
}

/// The `p` quantile (0..=1) of sorted values (NaN when empty).
pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// CPU seconds (user + system) of process `pid` from /proc (0 when it is gone).
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(0) ppid(1) ... utime(11) stime(12).
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The parent of process `pid`.
pub(crate) fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The postmaster of `cluster` and its children, each with its CPU seconds so far.
pub(crate) fn cluster_cpu(cluster: &Cluster) -> Vec<(u32, f64)> {
    let Some(pm) = cluster
        .data_dir()
        .and_then(|d| std::fs::read_to_string(d.join("postmaster.pid")).ok())
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return Vec::new();
    };
    let mut out = vec![(pm, cpu_secs(pm))];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && ppid(pid) == Some(pm)
            {
                out.push((pid, cpu_secs(pid)));
            }
        }
    }
    out
}

/// CPU seconds the cluster used between two [`cluster_cpu`] snapshots (processes that started in
/// between count from zero; ones that ended in between are not counted).
pub(crate) fn cluster_cpu_delta(before: &[(u32, f64)], after: &[(u32, f64)]) -> f64 {
    after
        .iter()
        .map(|(pid, c)| {
            let c0 = before.iter().find(|(p, _)| p == pid).map_or(0.0, |b| b.1);
            (c - c0).max(0.0)
        })
        .sum()
}
