//! A TCP relay for network-fault tests: it listens on `127.0.0.1:0` and forwards every connection
//! to a target port, and can be [frozen](Relay::freeze): bytes stop moving both ways while every
//! socket stays open, as on a half-open connection (a network that drops packets without a FIN, or a
//! hung middlebox). Later it is [thawed](Relay::thaw) (bytes flow again) or [cut](Relay::cut)
//! (every connection through it is closed).
//!
//! ```no_run
//! # async fn demo() {
//! use pgq_testkit::{Cluster, Relay};
//!
//! let cluster = Cluster::shared();
//! let relay = Relay::start(cluster.port()).await.unwrap();
//! let url = relay.url(&cluster.url("postgres")); // the same database, through the relay
//! relay.freeze(); // statements on connections through `url` now wait for an answer that never comes
//! relay.cut(); // and now they fail
//! # }
//! ```
//!
//! A frozen relay still accepts new connections but forwards nothing of them until it is thawed,
//! like a partition that swallows the SYN's answer. While frozen it reads nothing, so the kernel
//! buffers of both sides fill and TCP keepalive probes are still answered (by the relay's own
//! kernel): only timeouts above TCP (client-side deadlines, the server's `idle_session_timeout`,
//! `statement_timeout`) notice such a fault.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the relay does with bytes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    frozen: bool,
    /// Connections numbered below this are frozen ([`Relay::freeze_existing`]).
    frozen_below: u64,
    /// Bumped by [`Relay::cut`]: connections accepted before close.
    generation: u64,
    /// The number of the next connection accepted.
    next_id: u64,
}

/// A test-only TCP relay that can be frozen, thawed and cut. Stops when dropped (closing every
/// connection through it).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Start a relay on `127.0.0.1:0` that forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<Relay> {
        Relay::start_to(SocketAddr::from(([127, 0, 0, 1], target_port))).await
    }

    /// Start a relay on `127.0.0.1:0` that forwards to `target`.
    pub async fn start_to(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(Mode {
            frozen: false,
            frozen_below: 0,
            generation: 0,
            next_id: 0,
        });
        let mode = Arc::new(tx);
        let task = tokio::spawn(accept_loop(listener, target, mode.clone()));
        Ok(Relay { addr, mode, task })
    }

    /// The port the relay listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by the relay's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}127.0.0.1:{}{path}", self.port())
    }

    /// Stop forwarding bytes, both ways, on every connection (new ones included); sockets stay
    /// open.
    pub fn freeze(&self) {
        self.mode.send_modify(|m| m.frozen = true);
    }

    /// Stop forwarding bytes on the connections open now (sockets stay open); connections
    /// made from now on are forwarded, as when a NAT or load balancer loses its state of the old
    /// flows: only a client that gives up on the old connection gets through again.
    pub fn freeze_existing(&self) {
        self.mode.send_modify(|m| m.frozen_below = m.next_id);
    }

    /// Forward bytes again.
    pub fn thaw(&self) {
        self.mode.send_modify(|m| {
            m.frozen = false;
            m.frozen_below = 0;
        });
    }

    /// Close every connection through the relay now (both sides see the close) and forward new
    /// connections again.
    pub fn cut(&self) {
        self.mode.send_modify(|m| {
            m.frozen = false;
            m.frozen_below = 0;
            m.generation += 1;
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let mut id = 0;
        mode.send_modify(|m| {
            id = m.next_id;
            m.next_id += 1;
        });
        let rx = mode.subscribe();
        tokio::spawn(connection(client, target, rx, id));
    }
}

/// Wait until bytes may flow on connection `id`; `false` when the connection was cut.
async fn flowing(rx: &mut watch::Receiver<Mode>, generation: u64, id: u64) -> bool {
    let r = rx
        .wait_for(|m| m.generation != generation || (!m.frozen && id >= m.frozen_below))
        .await;
    matches!(r, Ok(m) if m.generation == generation)
}

/// Wait until the connection is cut (or the relay is gone).
async fn cut(rx: &mut watch::Receiver<Mode>, generation: u64) {
    let _ = rx.wait_for(|m| m.generation != generation).await;
}

async fn connection(client: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Mode>, id: u64) {
    let generation = rx.borrow().generation;
    if !flowing(&mut rx, generation, id).await {
        return;
    }
    let server = tokio::select! {
        s = TcpStream::connect(target) => match s {
            Ok(s) => s,
            Err(_) => return,
        },
        () = cut(&mut rx, generation) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, rx.clone(), generation, id));
    let down = tokio::spawn(pump(sr, cw, rx, generation, id));
    let _ = tokio::join!(up, down);
}

/// Copy `from` to `to` while the relay is not frozen; close `to`'s direction at EOF; drop both
/// (closing the sockets once the other direction is done too) when cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut rx: watch::Receiver<Mode>,
    generation: u64,
    id: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !flowing(&mut rx, generation, id).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            // Frozen (or cut) while waiting for bytes: look at the mode again.
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            () = cut(&mut rx, generation) => return,
        }
    }
}
