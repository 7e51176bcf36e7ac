//! Helpers: running the real `pgq-ticker` binary, polling the database, reading /health.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How long any eventual condition may take before a test fails (generous: a busy machine).
pub(crate) use pgq_testkit::DEADLINE;

/// How many log lines a [`TickerProc`] keeps.
pub(crate) const MAX_KEPT_LINES: usize = 100_000;

/// A running `pgq-ticker` process; SIGKILLed when dropped.
pub(crate) struct TickerProc {
    pub(crate) child: Child,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    /// Lines written so far (`log` keeps only the first [`MAX_KEPT_LINES`]).
    pub(crate) lines: Arc<AtomicUsize>,
    pub(crate) http: Option<u16>,
    /// The thread copying stderr into `log`; joined once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl TickerProc {
    /// Start the binary with `args` (logging at debug level, captured).
    pub(crate) fn spawn(args: &[&str]) -> TickerProc {
        TickerProc::spawn_http(args, false)
    }

    /// Start the binary with `args`, plus `--http` on a free port when `http` is set.
    pub(crate) fn spawn_http(args: &[&str], http: bool) -> TickerProc {
        TickerProc::spawn_limited(args, http, None)
    }

    /// [`TickerProc::spawn_http`], with the open-files limit set to `nofile` (`ulimit -n`).
    pub(crate) fn spawn_limited(args: &[&str], http: bool, nofile: Option<u32>) -> TickerProc {
        let port = http.then(free_port);
        let bin = env!("CARGO_BIN_EXE_pgq-ticker");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .env("RUST_LOG", "pgq_ticker=debug")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = port {
            cmd.arg("--http").arg(format!("127.0.0.1:{p}"));
        }
        let mut child = cmd.spawn().expect("start pgq-ticker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let lines = Arc::new(AtomicUsize::new(0));
        let count = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Count every line, keep the first ones (a runaway log must not eat the memory).
                if count.fetch_add(1, Ordering::Relaxed) < MAX_KEPT_LINES {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        TickerProc {
            child,
            log,
            lines,
            http: port,
            reader: Some(reader),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `HUP`, `KILL`).
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Wait for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Every line the process wrote is in `log` once its stderr is at EOF.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return st.code();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "pgq-ticker did not exit\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The state of database `db_name` (a label suffix) from /health, if reported.
    pub(crate) fn db_state(&self, db_name: &str) -> Option<String> {
        let health = self.health()?;
        health["databases"]
            .as_array()?
            .iter()
            .find(|d| {
                d["database"]
                    .as_str()
                    .is_some_and(|l| l.ends_with(&format!("/{db_name}")))
            })
            .and_then(|d| d["state"].as_str().map(str::to_owned))
    }

    /// GET /health as JSON.
    pub(crate) fn health(&self) -> Option<serde_json::Value> {
        let body = http_get(self.http?, "/health")?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for TickerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain HTTP GET on 127.0.0.1:port; the body.
pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

pub(crate) use pgq_testkit::{c, eventually, free_port, q, tick_count};

/// A queue that pgq.ticker() ticks on every call (no idle back-off), not fast-polled.
pub(crate) async fn busy_queue(pool: &PgPool, name: &str) {
    pgq_core::create_queue(pool, &q(name)).await.unwrap();
    sqlx::query("select pgq.set_queue_config($1, 'ticker_idle_period', '0'), pgq.set_queue_config($1, 'ticker_max_lag', '1 millisecond')")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

/// Wait until `queue` has more than `n` ticks; the new count.
pub(crate) async fn ticks_beyond(pool: &PgPool, queue: &str, n: i64) -> i64 {
    eventually(&format!("more than {n} ticks on {queue}"), || async {
        let k = tick_count(pool, queue).await;
        (k > n).then_some(k)
    })
    .await
}
