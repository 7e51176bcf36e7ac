//! Private clusters on this machine: their directory under `/tmp/pgq-testkit`, `initdb`,
//! `pg_ctl` start/stop/kill, and the removal of clusters left behind by dead test processes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::{Error, sys};

/// Where private clusters live: one directory per cluster.
pub(crate) const BASE_DIR: &str = "/tmp/pgq-testkit";

/// The file in a cluster directory naming the process that owns it: `PID STARTTIME`.
const OWNER_FILE: &str = "owner";

/// How long `pg_ctl` waits for a start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// A server this process started: where it lives and the port it listens on.
pub(crate) struct Private {
    pub(crate) bindir: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) port: u16,
}

impl Private {
    /// A new, empty cluster directory owned by this process (and by `postgres` when we are root),
    /// watched by a watchdog that removes it if this process dies. Nothing runs in it yet.
    pub(crate) fn create() -> Result<Private, Error> {
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
        let private = Private {
            data: dir.join("data"),
            log: dir.join("server.log"),
            bindir,
            dir,
            port: 0,
        };
        // From here on the directory is cleaned up by the caller (on error) or by the watchdog (if
        // killed).
        if let Err(e) = sys::spawn_watchdog(pid, &private.dir, &private.bindir) {
            private.remove();
            return Err(e);
        }
        Ok(private)
    }

    pub(crate) fn pg(&self, prog: &str) -> std::process::Command {
        sys::pg_command(&self.bindir, prog)
    }

    pub(crate) fn init_and_start(&mut self, shared: bool) -> Result<(), Error> {
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
             logging_collector = off\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n",
            self.dir.display().to_string().replace('\'', "''"),
            // A private cluster is for crash tests: a commit must survive a kill of the server.
            // (fsync = off only risks data on an OS crash, which tests do not simulate.)
            if shared { "off" } else { "on" },
        );
        // (The last three are PostgreSQL's defaults, written out: a standby can be cloned from any
        // private cluster, see `Cluster::start_standby`.)
        self.append_conf(&conf)?;
        self.start_on_free_port()
    }

    /// Start the server on a free port (written to its configuration).
    pub(crate) fn start_on_free_port(&mut self) -> Result<(), Error> {
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

    pub(crate) fn append_conf(&self, text: &str) -> Result<(), Error> {
        let path = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io(format!("could not write {}", path.display()), e))
    }

    pub(crate) fn start(&self) -> Result<(), Error> {
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

    pub(crate) fn stop(&self, mode: &str) -> Result<(), Error> {
        let mut cmd = self.pg("pg_ctl");
        cmd.args(["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "-D"])
            .arg(&self.data);
        sys::run(cmd).map(drop)
    }

    pub(crate) fn kill(&self) -> Result<(), Error> {
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
    pub(crate) fn remove(&self) {
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
pub(crate) fn read_log_tail(log: &Path, from: u64, lines: usize) -> String {
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
