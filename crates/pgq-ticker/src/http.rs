//! The metrics and health endpoint: `GET /metrics` (Prometheus text format), `GET /health`
//! (JSON: live/ready and per-database state), `GET /health/live`, `GET /health/ready`.
//!
//! A deliberately tiny HTTP/1.1 server (one request per connection): it answers scrapes and
//! probes, nothing else. It never competes with ticking for file descriptors: it serves a bounded
//! number of connections at once, cuts off a request that is not done within a deadline, and
//! backs off (logging rate-limited) when `accept` fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::state::{Phase, Registry};

/// Install the Prometheus recorder (process-wide; call once).
pub(crate) fn install_recorder() -> Option<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok()
}

/// Bind `addr`; fails (before anything else starts) when the address is taken.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Http {
        addr: addr.to_string(),
        source,
    })
}

/// Most HTTP connections served at once, whatever the open-files limit (see [`max_connections`]).
const MAX_CONNECTIONS: usize = 64;
/// A whole request — reading its head and writing the answer — must be done within this; a
/// client that sends or reads slowly is cut off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read.
const MAX_HEAD: usize = 4096;
/// After a failed `accept` (out of file descriptors, say) wait this long before the next one,
/// doubling up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A repeated warning is written at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// How many connections the server serves at once: [`MAX_CONNECTIONS`], and at most a quarter of
/// the open-files limit, so the database sessions always find file descriptors. Connections
/// beyond it wait in the listen backlog; they take no file descriptor of the process.
pub(crate) fn max_connections() -> usize {
    match open_files_limit() {
        Some(n) => usize::try_from(n / 4)
            .unwrap_or(usize::MAX)
            .clamp(2, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    }
}

/// The soft open-files limit (`ulimit -n`) of this process, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Lets a repeated warning through at most once per [`LOG_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(n)` when a line may be written now (`n` lines were held back since the last one).
    fn pass(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Serve until cancelled: at most `max_connections` at a time, each request within
/// [`REQUEST_TIMEOUT`]; `accept` failures back off and are logged rate-limited.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    registry: Registry,
    max_connections: usize,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_failed = Throttle::default();
    let mut full = Throttle::default();
    loop {
        // A free slot first: beyond the limit, connections wait in the listen backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if full.pass().is_some() {
                    tracing::info!(
                        max_connections,
                        "http: serving the maximum number of connections; new ones wait"
                    );
                }
                tokio::select! {
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                    () = cancel.cancelled() => return,
                }
            }
        };
        let mut sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    s
                }
                Err(e) => {
                    if let Some(held_back) = accept_failed.pass() {
                        tracing::warn!(
                            held_back,
                            "http accept failed: {e}; retrying with backoff (this warning is \
                             repeated at most every {}s)",
                            LOG_EVERY.as_secs()
                        );
                    }
                    drop(slot);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = cancel.cancelled() => return,
        };
        let handle = handle.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(&mut sock, &handle, &registry)).await;
        });
    }
}

/// Read one request head and write the answer.
async fn answer(sock: &mut TcpStream, handle: &PrometheusHandle, registry: &Registry) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    // Read until the end of the request head (or the buffer is full).
    while len < buf.len() {
        match sock.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = respond(method, path, handle, registry);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn respond(
    method: &str,
    path: &str,
    handle: &PrometheusHandle,
    registry: &Registry,
) -> (&'static str, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "GET only\n".into());
    }
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        "/health" | "/health/live" | "/health/ready" => {
            let dbs: Vec<_> = registry
                .read()
                .map(|r| r.values().map(|s| s.status()).collect())
                .unwrap_or_default();
            // Ready: every database is ticked (by us or a standby peer) or has no pgq.
            let ready = dbs
                .iter()
                .all(|d| matches!(d.state, Phase::Active | Phase::Standby | Phase::NoPgq));
            let ok = path == "/health/live" || ready || path == "/health";
            let body = serde_json::json!({
                "live": true,
                "ready": ready,
                "databases": dbs,
            });
            (
                if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "application/json",
                format!("{body}\n"),
            )
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".into(),
        ),
    }
}
