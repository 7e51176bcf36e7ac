//! [`Cluster`]: one PostgreSQL server for tests, a private cluster ([`private`]) or an external
//! server ([`external`]).

mod external;
mod private;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::{Error, sys, tls};
pub(crate) use external::ExternalUrl;
use external::encode;
pub(crate) use private::Private;

/// Environment variable: a superuser URL of an existing server to use instead of a private cluster.
pub(crate) const URL_ENV: &str = "PGQ_TEST_DATABASE_URL";

/// One PostgreSQL server for tests: a private cluster this process started, or an external server
/// named by `PGQ_TEST_DATABASE_URL`.
///
/// Private clusters run from the system's PostgreSQL binaries in a directory under `/tmp/pgq-testkit/`,
/// listen on `127.0.0.1` on a free port, trust every local connection, and run with `fsync=off`.
/// When this process runs as root, the server runs as the `postgres` OS user.
pub struct Cluster {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    kind: Kind,
    /// True for [`Cluster::shared`]: its test databases are dropped when done with.
    shared: bool,
    /// The template database with the schema installed (`Err`: why it could not be made).
    pub(crate) template: tokio::sync::OnceCell<Result<String, String>>,
    /// Drops the databases of dropped [`TestDb`](crate::TestDb)s in the background.
    janitor: OnceLock<Sender<String>>,
}

pub(crate) enum Kind {
    Private(Private),
    External(ExternalUrl),
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::Private(p) => f
                .debug_struct("Cluster")
                .field("port", &p.port)
                .field("dir", &p.dir)
                .finish(),
            Kind::External(u) => f
                .debug_struct("Cluster")
                .field("external", &u.host_port)
                .finish(),
        }
    }
}

impl Cluster {
    /// The cluster shared by every test in this test binary.
    ///
    /// It is started once, lazily, on first use (thread-safe; usable from any tokio runtime, as each
    /// `#[tokio::test]` has its own), and stopped and removed automatically when the test process
    /// exits, even if it is killed: a detached watchdog process waits for this process to end.
    ///
    /// If the environment variable `PGQ_TEST_DATABASE_URL` is set (a superuser URL of an existing
    /// server), no cluster is started and that server is used.
    ///
    /// # Panics
    ///
    /// If the cluster cannot be started (for example, PostgreSQL is not installed); every later call
    /// panics with the same message.
    #[track_caller]
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            let cluster = match std::env::var(URL_ENV) {
                Ok(url) if !url.trim().is_empty() => ExternalUrl::parse(url.trim())
                    .map(|u| Cluster::from_kind(Kind::External(u), true)),
                _ => Cluster::launch(true),
            };
            cluster.map_err(|e| e.to_string())
        });
        match shared {
            Ok(cluster) => cluster,
            Err(e) => panic!("pgq-testkit: no shared PostgreSQL server for tests: {e}"),
        }
    }

    /// Starts a new private cluster owned by the caller, for fault tests that stop, kill and restart
    /// it. It is stopped and its directory removed when dropped (after the last [`TestDb`](crate::TestDb)
    /// made on it is dropped too).
    ///
    /// Unlike the shared cluster, it runs with `synchronous_commit = on`, so that a committed
    /// transaction survives [`kill`](Cluster::kill) and [`stop_immediate`](Cluster::stop_immediate)
    /// (`fsync` is still off: only an OS crash could lose data, and tests do not cause those).
    ///
    /// This always starts a real cluster, even when `PGQ_TEST_DATABASE_URL` is set.
    pub fn start_private() -> Result<Cluster, Error> {
        Cluster::launch(false)
    }

    fn launch(shared: bool) -> Result<Cluster, Error> {
        let started = Instant::now();
        let mut private = Private::create()?;
        if let Err(e) = private.init_and_start(shared) {
            private.remove();
            return Err(e);
        }
        tracing::info!(
            dir = %private.dir.display(),
            port = private.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pgq-testkit: started a private PostgreSQL cluster"
        );
        Ok(Cluster::from_kind(Kind::Private(private), shared))
    }

    pub(crate) fn from_kind(kind: Kind, shared: bool) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                kind,
                shared,
                template: tokio::sync::OnceCell::new(),
                janitor: OnceLock::new(),
            }),
        }
    }

    /// Another handle to the same cluster (kept by a [`TestDb`](crate::TestDb)).
    pub(crate) fn handle(&self) -> Cluster {
        Cluster {
            inner: Arc::clone(&self.inner),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// True if test databases should be dropped when done with (the shared cluster or server).
    pub(crate) fn drops_databases(&self) -> bool {
        self.inner.shared
    }

    /// True for an external server (`PGQ_TEST_DATABASE_URL`).
    pub(crate) fn is_external(&self) -> bool {
        matches!(self.inner.kind, Kind::External(_))
    }

    pub(crate) fn private(&self, what: &'static str) -> Result<&Private, Error> {
        match &self.inner.kind {
            Kind::Private(p) => Ok(p),
            Kind::External(_) => Err(Error::External(what)),
        }
    }

    /// The TCP port the server listens on (on `127.0.0.1` for a private cluster).
    pub fn port(&self) -> u16 {
        match &self.inner.kind {
            Kind::Private(p) => p.port,
            Kind::External(u) => u.port,
        }
    }

    /// The URL of database `db` as the superuser, e.g. `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        match &self.inner.kind {
            Kind::Private(p) => format!("postgres://postgres@127.0.0.1:{}/{}", p.port, encode(db)),
            Kind::External(u) => u.with(u.userinfo.as_deref(), db),
        }
    }

    /// The URL of database `db` as another role (for least-privilege tests), with `password` if given.
    ///
    /// A private cluster trusts every local connection, so the password is not checked there; the role
    /// must exist and have `LOGIN`.
    pub fn url_as(&self, role: &str, password: Option<&str>, db: &str) -> String {
        let userinfo = match password {
            Some(pw) => format!("{}:{}", encode(role), encode(pw)),
            None => encode(role),
        };
        match &self.inner.kind {
            Kind::Private(p) => {
                format!("postgres://{userinfo}@127.0.0.1:{}/{}", p.port, encode(db))
            }
            Kind::External(u) => u.with(Some(&userinfo), db),
        }
    }

    /// Stops the server with `pg_ctl stop -m fast` (clients are disconnected, a clean shutdown).
    pub fn stop_fast(&self) -> Result<(), Error> {
        self.private("stop_fast")?.stop("fast")
    }

    /// Stops the server with `pg_ctl stop -m immediate` (no shutdown checkpoint: like a crash, but
    /// orderly for the processes).
    pub fn stop_immediate(&self) -> Result<(), Error> {
        self.private("stop_immediate")?.stop("immediate")
    }

    /// Kills the server with SIGKILL, like a power loss: the postmaster (pid from `postmaster.pid`) and
    /// its child processes (backends and background workers). Returns once they are all gone.
    pub fn kill(&self) -> Result<(), Error> {
        self.private("kill")?.kill()
    }

    /// Starts the server again after a stop or kill, with the same port and data directory, and waits
    /// until it accepts connections (after a kill that includes crash recovery).
    pub fn start(&self) -> Result<(), Error> {
        self.private("start")?.start()
    }

    /// Turns on TLS for a private cluster: makes a throw-away certificate authority and a server
    /// certificate for `localhost` and `127.0.0.1` (with `openssl`), sets `ssl = on` and restarts
    /// the server. Returns the CA certificate's path, for `sslmode=verify-full&sslrootcert=...`.
    pub fn enable_tls(&self) -> Result<PathBuf, Error> {
        let p = self.private("enable_tls")?;
        let dir = &p.dir;
        let run = |args: &[&str]| tls::openssl(dir, args);
        let ext = dir.join("server.ext");
        std::fs::write(&ext, "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
            .map_err(|e| Error::io(format!("could not write {}", ext.display()), e))?;
        let ca = tls::make_ca(dir, "pgq-testkit CA")?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ])?;
        let key = dir.join("server.key");
        if sys::is_root() {
            let (uid, gid) = sys::postgres_ids()?;
            std::os::unix::fs::chown(&key, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("could not chown {}", key.display()), e))?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("could not chmod {}", key.display()), e))?;
        let quote = |f: &str| dir.join(f).display().to_string().replace('\'', "''");
        p.append_conf(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            quote("server.crt"),
            quote("server.key")
        ))?;
        p.stop("fast")?;
        p.start()?;
        Ok(ca)
    }

    /// The data directory (`PGDATA`) of a private cluster; `None` for an external server.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.inner.kind {
            Kind::Private(p) => Some(&p.data),
            Kind::External(_) => None,
        }
    }

    /// Queues database `name` to be dropped in the background (best effort).
    pub(crate) fn drop_database_later(&self, name: String) {
        let janitor = self.inner.janitor.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let url = self.url("postgres");
            let spawned = std::thread::Builder::new()
                .name("pgq-testkit-janitor".into())
                .spawn(move || janitor(&url, rx));
            if let Err(e) = spawned {
                tracing::warn!("pgq-testkit: no janitor thread, test databases are kept: {e}");
            }
            tx
        });
        let _ = janitor.send(name);
    }
}

/// Drops the databases it is sent, one connection for all; errors are logged and skipped.
fn janitor(url: &str, rx: std::sync::mpsc::Receiver<String>) {
    use sqlx::Connection as _;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut conn: Option<sqlx::PgConnection> = None;
    for name in rx {
        rt.block_on(async {
            if conn.is_none() {
                conn = sqlx::PgConnection::connect(url).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                let sql = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    crate::db::quote_ident(&name)
                );
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                {
                    tracing::debug!("pgq-testkit: could not drop test database {name}: {e}");
                    conn = None;
                }
            }
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Kind::Private(p) = &self.kind {
            p.remove();
        }
    }
}
