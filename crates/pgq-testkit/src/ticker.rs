//! Tickers as child processes of a test: the `pgq-ticker` binary ([`TickerProc`], its log kept
//! line by line with the time each line arrived, its `/health` read) and pgqd ([`Pgqd`], an
//! interop peer that may be missing: [`peer_available`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::helpers::{DEADLINE, free_port};
use crate::process::CONNECTION_VARS;

/// How many log lines a [`TickerProc`] keeps (it counts every line: [`TickerProc::lines_written`]).
pub const MAX_KEPT_LINES: usize = 100_000;

/// How a [`TickerProc`] is started.
#[derive(Debug, Clone)]
pub struct TickerOptions {
    /// Add `--http 127.0.0.1:PORT` on a free port ([`TickerProc::http_port`]).
    pub http: bool,
    /// Run with the open-files limit set to this (`ulimit -n`).
    pub nofile: Option<u32>,
    /// `RUST_LOG` of the process (default `pgq_ticker=debug`).
    pub rust_log: String,
    /// Also copy each line to this process's standard error (a benchmark shows the warnings).
    pub echo: bool,
}

impl Default for TickerOptions {
    fn default() -> Self {
        TickerOptions {
            http: false,
            nofile: None,
            rust_log: "pgq_ticker=debug".to_owned(),
            echo: false,
        }
    }
}

/// One line of a [`TickerProc`]'s standard error, with the moment the test read it (lines are
/// read as they are written: the log goes unbuffered to a pipe).
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the line was read.
    pub at: Instant,
    /// The line.
    pub text: String,
}

/// A running `pgq-ticker` process (the binary is passed in: a test of the pgq-ticker package
/// gives `env!("CARGO_BIN_EXE_pgq-ticker")`, others [`workspace_bin`](crate::workspace_bin)),
/// started without the caller's connection variables; its standard error is collected line by
/// line. SIGKILLed when dropped.
///
/// ```no_run
/// # fn demo(url: &str) {
/// use pgq_testkit::TickerProc;
///
/// let t = TickerProc::spawn_http(
///     pgq_testkit::workspace_bin("pgq-ticker"),
///     &["--db", url, "--ticker-period", "100ms"],
/// );
/// let _state = t.db_state("mydb"); // "active", "standby", "no_pgq", "down", ...
/// # }
/// ```
#[derive(Debug)]
pub struct TickerProc {
    /// The process.
    pub child: Child,
    log: Arc<Mutex<Vec<LogLine>>>,
    written: Arc<AtomicUsize>,
    http: Option<u16>,
    /// Copies standard error into `log`; joined once the process has exited.
    reader: Option<JoinHandle<()>>,
}

impl TickerProc {
    /// Start `bin ARGS` (logging at debug level).
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn spawn(bin: impl AsRef<Path>, args: &[&str]) -> TickerProc {
        TickerProc::start(bin, args, &TickerOptions::default())
    }

    /// Start `bin ARGS --http 127.0.0.1:PORT` on a free port (logging at debug level).
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn spawn_http(bin: impl AsRef<Path>, args: &[&str]) -> TickerProc {
        let options = TickerOptions {
            http: true,
            ..TickerOptions::default()
        };
        TickerProc::start(bin, args, &options)
    }

    /// Start `bin ARGS` as `options` say.
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn start(bin: impl AsRef<Path>, args: &[&str], options: &TickerOptions) -> TickerProc {
        let bin = bin.as_ref();
        let port = options.http.then(free_port);
        let mut cmd = match options.nofile {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        for v in CONNECTION_VARS {
            cmd.env_remove(v);
        }
        cmd.args(args)
            .env("RUST_LOG", &options.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = port {
            cmd.arg("--http").arg(format!("127.0.0.1:{p}"));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicUsize::new(0));
        let (sink, count, echo) = (log.clone(), written.clone(), options.echo);
        let reader = std::thread::spawn(move || {
            for text in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{text}");
                }
                // Count every line, keep the first ones (a runaway log must not eat the memory).
                if count.fetch_add(1, Ordering::Relaxed) < MAX_KEPT_LINES {
                    let line = LogLine {
                        at: Instant::now(),
                        text,
                    };
                    sink.lock().expect("the log").push(line);
                }
            }
        });
        TickerProc {
            child,
            log,
            written,
            http: port,
            reader: Some(reader),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of `/metrics` and `/health` (started with `http`).
    pub fn http_port(&self) -> Option<u16> {
        self.http
    }

    /// The lowest file descriptor number the process has not open now (`/proc/PID/fd`): the one
    /// its next `open` or `accept` gets.
    ///
    /// # Panics
    ///
    /// When the directory cannot be read (the process is gone).
    pub fn lowest_free_descriptor(&self) -> usize {
        let open: std::collections::BTreeSet<usize> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .expect("read /proc/PID/fd")
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
        (0..).find(|n| !open.contains(n)).unwrap_or_default()
    }

    /// Set the running process's soft open-files limit (`prlimit`): descriptors it already has
    /// stay open, a new one numbered `soft` or higher fails with `EMFILE`.
    ///
    /// # Panics
    ///
    /// When `prlimit` fails.
    pub fn limit_open_files(&self, soft: usize) {
        let ok = Command::new("prlimit")
            .arg("--pid")
            .arg(self.pid().to_string())
            .arg(format!("--nofile={soft}:"))
            .status()
            .expect("run prlimit")
            .success();
        assert!(ok, "prlimit --nofile={soft}: for {} failed", self.pid());
    }

    /// Send a signal by name (`TERM`, `HUP`, `KILL`).
    ///
    /// # Panics
    ///
    /// When `kill` fails (the process is gone).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// SIGKILL the process (if it still runs) and reap it.
    ///
    /// # Panics
    ///
    /// When a running process cannot be killed or reaped.
    pub fn sigkill(&mut self) {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.child.kill().expect("SIGKILL pgq-ticker");
        }
        self.child.wait().expect("reap pgq-ticker");
    }

    /// Wait at most `limit` for the process to exit; its exit status (every line it wrote is in
    /// the log then), `None` if it still runs.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Its standard error is at end of file: the reader has every line.
                if let Some(reader) = self.reader.take() {
                    reader.join().expect("the log reader thread");
                }
                return Some(st);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (at most [`DEADLINE`]) for the process to exit; its exit code (`None` when a signal
    /// ended it).
    ///
    /// # Panics
    ///
    /// When it has not exited by then.
    pub fn wait_exit(&mut self) -> Option<i32> {
        match self.exit_within(DEADLINE) {
            Some(st) => st.code(),
            None => panic!(
                "pgq-ticker did not exit within {DEADLINE:?}\n{}",
                self.logs()
            ),
        }
    }

    /// Everything written to standard error so far (the first [`MAX_KEPT_LINES`] lines).
    pub fn logs(&self) -> String {
        self.lines().join("\n")
    }

    /// The lines written to standard error so far (the first [`MAX_KEPT_LINES`]).
    pub fn lines(&self) -> Vec<String> {
        let log = self.log.lock().expect("the log");
        log.iter().map(|l| l.text.clone()).collect()
    }

    /// The lines written so far with the moment each was read.
    pub fn timed_lines(&self) -> Vec<LogLine> {
        self.log.lock().expect("the log").clone()
    }

    /// How many lines were written so far (also those beyond [`MAX_KEPT_LINES`]).
    pub fn lines_written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    /// The state of database `db_name` (the end of its label, `host:port/db_name`) in
    /// `/health`: `active`, `standby`, `no_pgq`, `connecting`, `down`; `None` when not reported.
    pub fn db_state(&self, db_name: &str) -> Option<String> {
        let health = self.health()?;
        let suffix = format!("/{db_name}");
        health["databases"]
            .as_array()?
            .iter()
            .find(|d| d["database"].as_str().is_some_and(|l| l.ends_with(&suffix)))
            .and_then(|d| d["state"].as_str().map(str::to_owned))
    }

    /// `GET /health` as JSON (`None` without `http`, or when it does not answer).
    pub fn health(&self) -> Option<serde_json::Value> {
        let body = http_get(self.http?, "/health")?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for TickerProc {
    fn drop(&mut self) {
        // Never panic in drop (the test may be unwinding already).
        if let Ok(None) = self.child.try_wait()
            && let Err(e) = self.child.kill()
        {
            eprintln!("pgq-testkit: could not kill pgq-ticker {}: {e}", self.pid());
        }
        let _reaped = self.child.wait();
    }
}

/// A plain HTTP/1.0 `GET path` on `127.0.0.1:port`; the body (`None` when the server does not
/// answer within 5 s).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// Whether missing interop peers (pgqd, python3-pgq) fail the tests: `PGQ_REQUIRE_PEERS=1` (set
/// by `scripts/test`, which installs them) or `CI=true`.
pub fn peers_required() -> bool {
    std::env::var("PGQ_REQUIRE_PEERS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether interop peer `name` is usable (`probe` succeeds). When it is not: a failure (panic)
/// if [`peers_required`], else a `SKIPPED` banner written straight to the terminal (past the
/// test harness's capture), and `false`: the test then returns early.
///
/// # Panics
///
/// When the peer is missing and peers are required.
pub fn peer_available(name: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !peers_required(),
            "interop peer {name} is missing, and PGQ_REQUIRE_PEERS=1 or CI=true says it must be \
             there: run scripts/setup-env"
        );
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let _unreported = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: interop peer {name} is not installed (run scripts/setup-env; \
             PGQ_REQUIRE_PEERS=1 makes this a failure) ***\n"
        );
    }
    ok
}

/// A running pgqd (the original PgQ ticker daemon), logging into its own directory; SIGKILLed
/// when dropped.
#[derive(Debug)]
pub struct Pgqd {
    /// The process.
    pub child: Child,
    dir: tempfile::TempDir,
}

impl Pgqd {
    /// Whether pgqd is installed (see [`peer_available`]: a failure when peers are required).
    ///
    /// # Panics
    ///
    /// When it is missing and peers are required.
    pub fn available() -> bool {
        peer_available("pgqd", Command::new("sh").args(["-c", "command -v pgqd"]))
    }

    /// Start pgqd with a `[pgqd]` section of `settings` (`key = value` lines: `base_connstr`,
    /// `database_list`, `ticker_period`, ...) plus its `logfile` and `pidfile` in a directory of
    /// its own.
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn start(settings: &str) -> Pgqd {
        let dir = tempfile::tempdir().expect("a directory for pgqd");
        let ini = dir.path().join("pgqd.ini");
        let text = format!(
            "[pgqd]\n{}\nlogfile = {}\npidfile = {}\n",
            settings.trim_end(),
            dir.path().join("pgqd.log").display(),
            dir.path().join("pgqd.pid").display(),
        );
        std::fs::write(&ini, text).expect("write pgqd.ini");
        let mut cmd = Command::new("pgqd");
        for v in CONNECTION_VARS {
            cmd.env_remove(v);
        }
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgqd (scripts/setup-env installs it)");
        Pgqd { child, dir }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    ///
    /// # Panics
    ///
    /// When its state cannot be read.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// What pgqd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgqd.log"))
            .unwrap_or_else(|e| format!("(no pgqd log: {e})"))
    }
}

impl Drop for Pgqd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Err(e) = self.child.kill()
        {
            eprintln!("pgq-testkit: could not kill pgqd {}: {e}", self.pid());
        }
        let _reaped = self.child.wait();
    }
}
