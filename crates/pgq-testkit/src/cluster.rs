use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::{Error, sys};

/// Environment variable: a superuser URL of an existing server to use instead of a private cluster.
pub(crate) const URL_ENV: &str = "PGQ_TEST_DATABASE_URL";

/// Where private clusters live: one directory per cluster.
const BASE_DIR: &str = "/tmp/pgq-testkit";

/// The file in a cluster directory naming the process that owns it: `PID STARTTIME`.
const OWNER_FILE: &str = "owner";

/// How long `pg_ctl` waits for a start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

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

enum Kind {
    Private(Private),
    External(ExternalUrl),
}

struct Private {
    bindir: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
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
        let bindir = sys::find_bindir()?;
        let base = prepare_base_dir()?;
        remove_stale_clusters(&base, &bindir);
        let ids = if sys::is_root() {
            Some(sys::postgres_ids()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("c")
            .tempdir_in(&base)
            .map_err(|e| {
                Error::io(
                    format!("could not create a directory in {}", base.display()),
                    e,
                )
            })?
            .keep();
        let pid = std::process::id();
        // Written whole and renamed into place: other processes look for stale clusters concurrently.
        let owner = format!("{pid} {}\n", sys::start_time(pid).unwrap_or(0));
        let tmp = dir.join(format!("{OWNER_FILE}.tmp"));
        std::fs::write(&tmp, owner)
            .and_then(|()| std::fs::rename(&tmp, dir.join(OWNER_FILE)))
            .map_err(|e| Error::io(format!("could not write {}/{OWNER_FILE}", dir.display()), e))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| {
                Error::io(format!("could not give {} to postgres", dir.display()), e)
            })?;
        }
        let mut private = Private {
            data: dir.join("data"),
            log: dir.join("server.log"),
            bindir,
            dir,
            port: 0,
        };
        // From here on the directory is cleaned up by Drop (on error) or by the watchdog (if killed).
        if let Err(e) = sys::spawn_watchdog(pid, &private.dir, &private.bindir) {
            private.remove();
            return Err(e);
        }
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

    fn from_kind(kind: Kind, shared: bool) -> Cluster {
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

    fn private(&self, what: &'static str) -> Result<&Private, Error> {
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
        let run = |args: &[&str]| -> Result<(), Error> {
            let mut cmd = std::process::Command::new("openssl");
            cmd.current_dir(dir).args(args);
            sys::run(cmd).map(|_| ())
        };
        let ext = dir.join("server.ext");
        std::fs::write(&ext, "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
            .map_err(|e| Error::io(format!("could not write {}", ext.display()), e))?;
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pgq-testkit CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])?;
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
        Ok(dir.join("ca.crt"))
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

impl Private {
    fn pg(&self, prog: &str) -> std::process::Command {
        sys::pg_command(&self.bindir, prog)
    }

    fn init_and_start(&mut self, shared: bool) -> Result<(), Error> {
        let mut initdb = self.pg("initdb");
        initdb
            .arg("-D")
            .arg(&self.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        sys::run(initdb)?;
        let conf = format!(
            "\n# pgq-testkit\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = {}\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n\
             logging_collector = off\n",
            self.dir.display().to_string().replace('\'', "''"),
            // A private cluster is for crash tests: a commit must survive a kill of the server.
            // (fsync = off only risks data on an OS crash, which tests do not simulate.)
            if shared { "off" } else { "on" },
        );
        self.append_conf(&conf)?;
        // A free port can be taken by someone else between our check and the server's bind: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            self.append_conf(&format!("port = {}\n", self.port))?;
            match self.start() {
                Err(Error::Start { ref log_tail, .. })
                    if attempt < 5
                        && (log_tail.contains("could not bind")
                            || log_tail.contains("could not create any TCP/IP sockets")) =>
                {
                    tracing::debug!(port = self.port, "pgq-testkit: port taken, retrying");
                }
                other => return other,
            }
        }
    }

    fn append_conf(&self, text: &str) -> Result<(), Error> {
        let path = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io(format!("could not write {}", path.display()), e))
    }

    fn start(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.remove_stale_pid_file();
            let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let mut cmd = self.pg("pg_ctl");
            cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log);
            let err = match sys::run(cmd) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let log_tail = read_log_tail(&self.log, log_start, 40);
            // After a kill, backends may still hold the old shared memory for a moment.
            if log_tail.contains("pre-existing shared memory block") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let reason = match err {
                Error::Command { output, .. } => output,
                other => other.to_string(),
            };
            return Err(Error::Start {
                reason,
                log: self.log.clone(),
                log_tail,
            });
        }
    }

    fn stop(&self, mode: &str) -> Result<(), Error> {
        let mut cmd = self.pg("pg_ctl");
        cmd.args(["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "-D"])
            .arg(&self.data);
        sys::run(cmd).map(drop)
    }

    fn kill(&self) -> Result<(), Error> {
        let pid = sys::postmaster_pid(&self.data)
            .filter(|pid| sys::pid_alive(*pid))
            .ok_or_else(|| Error::Command {
                command: "kill".into(),
                status: "not running".into(),
                output: format!("no running postmaster for {}", self.data.display()),
            })?;
        // Backends run in sessions of their own, so find them as the postmaster's children, stopped
        // first so that it forks no more.
        sys::signal("STOP", pid);
        let children = sys::children(pid);
        sys::signal("KILL", pid);
        for &child in &children {
            sys::signal("KILL", child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(&alive) = std::iter::once(&pid)
            .chain(&children)
            .find(|p| sys::pid_alive(**p))
        {
            if Instant::now() > deadline {
                return Err(Error::Command {
                    command: format!("kill -s KILL {alive}"),
                    status: "still running after 10 s".into(),
                    output: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.remove_stale_pid_file();
        Ok(())
    }

    /// Removes `postmaster.pid` and the socket lock files if their postmaster is dead. PostgreSQL
    /// itself refuses to start while that pid exists, which includes a zombie that nobody reaped
    /// (some container inits leave them for seconds). Safe: PostgreSQL still refuses to start while
    /// old backends hold the old shared memory, whose key comes from the data directory.
    fn remove_stale_pid_file(&self) {
        let mut lock_files = vec![self.data.join("postmaster.pid")];
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            lock_files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
            }));
        }
        for file in lock_files {
            if sys::lock_file_pid(&file).is_some_and(|pid| !sys::pid_alive(pid)) {
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    /// Stops the server (immediate) if it runs, and removes the cluster directory. Best effort.
    fn remove(&self) {
        if sys::postmaster_pid(&self.data).is_some_and(sys::pid_alive)
            && let Err(e) = self.stop("immediate")
        {
            tracing::warn!("pgq-testkit: could not stop {}: {e}", self.data.display());
            if let Some(pid) = sys::postmaster_pid(&self.data) {
                sys::signal("KILL", pid);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("pgq-testkit: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Creates `/tmp/pgq-testkit` (world-writable with the sticky bit, like `/tmp`).
fn prepare_base_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let base = PathBuf::from(BASE_DIR);
    std::fs::create_dir_all(&base)
        .map_err(|e| Error::io(format!("could not create {BASE_DIR}"), e))?;
    let meta =
        std::fs::metadata(&base).map_err(|e| Error::io(format!("could not stat {BASE_DIR}"), e))?;
    if meta.permissions().mode() & 0o7777 != 0o1777 {
        // Only the owner can change it; if another user created it right, this is not needed.
        let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777));
    }
    Ok(base)
}

/// Removes clusters left behind by test processes that died before their watchdog could clean up
/// (e.g. the watchdog was killed too). Best effort: errors are logged and skipped.
fn remove_stale_clusters(base: &Path, bindir: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|owner| {
                let mut parts = owner.split_whitespace().map(|p| p.parse::<u64>().ok());
                Some((u32::try_from(parts.next()??).ok()?, parts.next()??))
            });
        let owner_alive = match owner {
            Some((pid, start)) => {
                sys::pid_alive(pid) && (start == 0 || sys::start_time(pid) == Some(start))
            }
            // Being created right now by another process, or abandoned long ago?
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_none_or(|age| age < Duration::from_secs(120)),
        };
        if owner_alive {
            continue;
        }
        tracing::info!("pgq-testkit: removing stale cluster {}", dir.display());
        let data = dir.join("data");
        if let Some(pid) = sys::postmaster_pid(&data).filter(|p| sys::pid_alive(*p)) {
            let mut cmd = sys::pg_command(bindir, "pg_ctl");
            cmd.args(["stop", "-w", "-t", "10", "-m", "immediate", "-D"])
                .arg(&data);
            if sys::run(cmd).is_err() && sys::pid_alive(pid) {
                sys::signal("KILL", pid);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!("pgq-testkit: could not remove {}: {e}", dir.display());
        }
    }
}

/// A port on 127.0.0.1 that is free right now.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("could not find a free TCP port on 127.0.0.1", e))
}

/// The last `lines` lines written to `log` from byte `from` on (all of it if nothing new was written).
fn read_log_tail(log: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        if bytes.is_empty() && from > 0 {
            let _ = f.seek(SeekFrom::Start(0));
            let _ = f.read_to_end(&mut bytes);
        }
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `PGQ_TEST_DATABASE_URL`, split so that the database and the user can be replaced.
struct ExternalUrl {
    scheme: String,
    userinfo: Option<String>,
    host_port: String,
    port: u16,
    /// `?...` or empty.
    query: String,
}

impl ExternalUrl {
    fn parse(url: &str) -> Result<ExternalUrl, Error> {
        let bad = |reason| Error::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected postgres://user@host:port/db"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let (rest, query) = match rest.find('?') {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, String::new()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h.to_owned()),
            None => (None, authority.to_owned()),
        };
        let port = match host_port.rsplit_once(':') {
            Some((_, port)) if !host_port.ends_with(']') => {
                port.parse().map_err(|_| bad("the port is not a number"))?
            }
            _ => 5432,
        };
        Ok(ExternalUrl {
            scheme: scheme.to_owned(),
            userinfo,
            host_port,
            port,
            query,
        })
    }

    fn with(&self, userinfo: Option<&str>, db: &str) -> String {
        let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!(
            "{}://{user}{}/{}{}",
            self.scheme,
            self.host_port,
            encode(db),
            self.query
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_urls() {
        let u =
            ExternalUrl::parse("postgres://admin:s%40cret@db.example:6543/main?sslmode=disable")
                .unwrap();
        assert_eq!(u.port, 6543);
        assert_eq!(
            u.with(u.userinfo.as_deref(), "t_1"),
            "postgres://admin:s%40cret@db.example:6543/t_1?sslmode=disable"
        );
        assert_eq!(
            u.with(Some("bob"), "x y"),
            "postgres://bob@db.example:6543/x%20y?sslmode=disable"
        );
        let u = ExternalUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(u.port, 5432);
        assert_eq!(u.with(None, "d"), "postgresql://localhost/d");
        let u = ExternalUrl::parse("postgres://u@[::1]:5999/").unwrap();
        assert_eq!(u.port, 5999);
        assert_eq!(ExternalUrl::parse("postgres://[::1]/x").unwrap().port, 5432);
        assert!(ExternalUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("pgq_reader"), "pgq_reader");
        assert_eq!(encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }
}
