//! Operating-system helpers: finding the PostgreSQL binaries, running them (as `postgres` when we are
//! root), and looking at processes through `/proc`. No `unsafe`, no libc: small commands do the work.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// Environment variable naming the PostgreSQL server binary directory.
pub(crate) const BINDIR_ENV: &str = "PGQ_TEST_PG_BINDIR";

/// True when this process runs as root (then PostgreSQL runs as the `postgres` OS user).
pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// The uid and gid of the `postgres` OS user.
pub(crate) fn postgres_ids() -> Result<(u32, u32), Error> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(Error::NoPostgresUser),
    }
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Finds the server binaries: `$PGQ_TEST_PG_BINDIR`, else `pg_config --bindir` if it has `initdb`, else
/// the highest `/usr/lib/postgresql/*/bin` with `initdb`.
pub(crate) fn find_bindir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(Error::BinariesNotFound {
                searched: format!("{BINDIR_ENV}={}", dir.display()),
            })
        };
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let Some(major) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.split('.').next()?.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server(&bin) && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, dir)| dir)
        .ok_or_else(|| Error::BinariesNotFound {
            searched: "pg_config --bindir, /usr/lib/postgresql/*/bin".into(),
        })
}

/// A command running PostgreSQL program `prog` from `bindir`, as `postgres` when we are root.
pub(crate) fn pg_command(bindir: &Path, prog: &str) -> Command {
    let exe = bindir.join(prog);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // The caller's working directory may not be readable by `postgres`.
    cmd.current_dir("/").stdin(Stdio::null());
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGOPTIONS",
        "PGUSER",
        "PGDATABASE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Renders a command line for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; a non-zero exit becomes [`Error::Command`] with its output.
pub(crate) fn run(mut cmd: Command) -> Result<String, Error> {
    let line = describe(&cmd);
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("could not run `{line}`"), e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            output: text.trim_end().to_owned(),
        })
    }
}

/// The fields of `/proc/PID/stat` after the command name, starting with the state (field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True if process `pid` exists and is not a zombie.
pub(crate) fn pid_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), to tell a reused pid apart.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The pids of the children of process `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// Sends signal `sig` (a name such as `KILL`) to process `pid`. Errors are ignored: the process may
/// be gone already.
pub(crate) fn signal(sig: &str, pid: u32) {
    // The shell's `kill`: the `kill` program (procps) is not on every machine.
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The pid of the postmaster of data directory `data`, from `postmaster.pid`.
pub(crate) fn postmaster_pid(data: &Path) -> Option<u32> {
    lock_file_pid(&data.join("postmaster.pid"))
}

/// The pid on the first line of a PostgreSQL lock file.
pub(crate) fn lock_file_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Starts a detached watchdog (own session, survives a SIGKILL of this process): once process `pid`
/// is gone, it stops the cluster in `dir` with `pg_ctl stop -m immediate` and removes `dir`. It quits
/// on its own when `dir` disappears (the cluster was dropped normally).
pub(crate) fn spawn_watchdog(pid: u32, dir: &Path, bindir: &Path) -> Result<(), Error> {
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
if [ -d "$2" ]; then
    if [ "$4" = 1 ]; then
        runuser -u postgres -- "$3" stop -D "$2/data" -m immediate
    else
        "$3" stop -D "$2/data" -m immediate
    fi
    rm -rf "$2"
fi
"#;
    let mut cmd = Command::new("setsid");
    cmd.args(["-f", "sh", "-c", SCRIPT, "pgq-testkit-watchdog"])
        .arg(pid.to_string())
        .arg(dir)
        .arg(bindir.join("pg_ctl"))
        .arg(if is_root() { "1" } else { "0" })
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run(cmd).map(drop)
}
