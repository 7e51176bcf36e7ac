//! Small helpers every test suite of the workspace needs: names, waiting for a condition,
//! counting ticks, reading a process's memory, finding a free port.

use std::future::Future;
use std::time::{Duration, Instant};

use pgq_core::{ConsumerName, QueueName};
use sqlx::PgPool;

/// How long [`eventually`] and [`wait_for`] wait before failing the test: a hang guard for a busy
/// 2-core machine, never a timing assertion.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// How often [`eventually`] and [`wait_for`] check their condition.
const POLL: Duration = Duration::from_millis(50);

/// A queue name that must be valid.
///
/// # Panics
///
/// When `name` is not a valid queue name.
pub fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap_or_else(|e| panic!("queue name {name:?}: {e}"))
}

/// A consumer name that must be valid.
///
/// # Panics
///
/// When `name` is not a valid consumer name.
pub fn c(name: &str) -> ConsumerName {
    ConsumerName::new(name).unwrap_or_else(|e| panic!("consumer name {name:?}: {e}"))
}

/// Call `f` every 50 ms until it returns `Some`; that value.
///
/// # Panics
///
/// After [`DEADLINE`], naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Wait until `cond` holds (see [`eventually`]).
///
/// # Panics
///
/// After [`DEADLINE`], naming `what`.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// The number of ticks of queue `queue`.
///
/// # Panics
///
/// On a database error (which is not "no ticks").
pub async fn tick_count(pool: &PgPool, queue: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
         where q.queue_name = $1",
    )
    .bind(queue)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("counting the ticks of {queue}: {e}"))
}

/// Resident memory (`VmRSS`) of process `pid` in KiB; `None` once the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A TCP port on 127.0.0.1 that is free right now (another process may take it before it is
/// used: bind it at once).
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port on 127.0.0.1")
}
