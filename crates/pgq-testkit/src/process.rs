//! Running the workspace's binaries (`pgq`, `pgq-ticker`) from a test: locating them, starting
//! them with a clean environment, collecting their standard error, stopping them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::DEADLINE;

/// Environment variables that would change where `pgq` and `pgq-ticker` connect; [`command`]
/// removes them.
pub const CONNECTION_VARS: [&str; 14] = [
    "DATABASE_URL",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGCONNECT_TIMEOUT",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
    "PGOPTIONS",
];

/// The path of a workspace binary (`pgq`, `pgq-ticker`) built next to the running test binary
/// (`target/<profile>/`; `cargo test --workspace --all-targets` builds every binary first).
///
/// # Panics
///
/// When the binary has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it: cargo build --workspace (cargo test --workspace \
         --all-targets builds it before running tests)",
        path.display()
    );
    path
}

/// A command for workspace binary `name` with no connection variables (nor `RUST_LOG`) from the
/// environment and standard input closed.
///
/// # Panics
///
/// When the binary has not been built.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(workspace_bin(name));
    for v in CONNECTION_VARS {
        c.env_remove(v);
    }
    c.env_remove("RUST_LOG");
    c.stdin(Stdio::null());
    c
}

/// A child process whose standard error is collected line by line; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Process {
    /// The process.
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Start `cmd`, collecting its standard error (standard output is discarded).
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn spawn(mut cmd: Command) -> Process {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start a child process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("the log").push(line);
            }
        });
        Process { child, lines }
    }

    /// `pgq-ticker ARGS` with debug logging of the ticker.
    ///
    /// # Panics
    ///
    /// When the binary has not been built or cannot be started.
    pub fn ticker(args: &[&str]) -> Process {
        let mut cmd = command("pgq-ticker");
        cmd.args(args).env("RUST_LOG", "pgq_ticker=debug");
        Process::spawn(cmd)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to standard error so far.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// The lines written to standard error so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("the log").clone()
    }

    /// SIGKILL the process (if it still runs) and reap it.
    ///
    /// # Panics
    ///
    /// When a running process cannot be killed or reaped.
    pub fn sigkill(&mut self) {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.child.kill().expect("SIGKILL the child process");
        }
        self.child.wait().expect("reap the child process");
    }

    /// Wait (at most [`DEADLINE`]) for the process to exit; its exit code (`None` when a
    /// signal ended it).
    ///
    /// # Panics
    ///
    /// When it has not exited by then.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return st.code();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the process did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory in KiB (`VmRSS`), `None` once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Never panic in drop (the test may be unwinding already): a process that is gone
        // cannot be killed, and that is fine.
        if let Ok(None) = self.child.try_wait()
            && let Err(e) = self.child.kill()
        {
            eprintln!("pgq-testkit: could not kill process {}: {e}", self.pid());
        }
        if let Err(e) = self.child.wait() {
            eprintln!("pgq-testkit: could not reap process {}: {e}", self.pid());
        }
    }
}
