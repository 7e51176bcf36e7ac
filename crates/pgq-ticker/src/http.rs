//! The metrics and health endpoint: `GET /metrics` (Prometheus text format), `GET /health`
//! (JSON: live/ready and per-database state), `GET /health/live`, `GET /health/ready`.
//!
//! A deliberately tiny HTTP/1.1 server (one request per connection): it answers scrapes and
//! probes, nothing else.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
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

/// Serve until cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    registry: Registry,
    cancel: CancellationToken,
) {
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    continue;
                }
            },
            () = cancel.cancelled() => return,
        };
        let handle = handle.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read until the end of the request head (or the buffer is full).
            while len < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[len..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
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
            let (status, ctype, body) = respond(method, path, &handle, &registry);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
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
