//! Connection settings as libpq reads them (pgq_core::connect): several hosts with
//! target_session_attrs, connect_timeout, libpq's checks; and a log without colour codes
//! unless it goes to a terminal.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use pgq_testkit::{TestDb, free_port};

use crate::util::{TICKER, TickerProc, busy_queue, tick_count, ticks_beyond};

#[tokio::test]
async fn several_hosts_the_first_one_down() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "multi").await;
    let before = tick_count(db.pool(), "multi").await;
    let connstr = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname={} user=postgres \
         target_session_attrs=read-write",
        free_port(),
        db.cluster().port(),
        db.name()
    );
    let _t = TickerProc::spawn(TICKER, &["--db", &connstr, "--ticker-period", "100ms"]);
    ticks_beyond(db.pool(), "multi", before + 2).await;
}

#[tokio::test]
async fn connect_timeout_is_honoured() {
    // Accepts TCP connections (the backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for (connstr, env) in [
        (
            format!("host=127.0.0.1 port={port} dbname=x connect_timeout=1"),
            None,
        ),
        (
            format!("postgres://u@127.0.0.1:{port}/x"),
            Some(("PGCONNECT_TIMEOUT", "1")),
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgq-ticker"));
        cmd.args(["--db", &connstr, "--exit-after-failure", "2s"])
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{log}");
        assert!(
            log.contains("no answer within 1s (connect_timeout)"),
            "{log}"
        );
    }
    drop(silent);
}

#[test]
fn libpq_checks_apply() {
    for (var, value, expect) in [
        ("PGSSLMODE", "requir", "invalid sslmode value: \"requir\""),
        ("PGCONNECT_TIMEOUT", "soon", "connect_timeout"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pgq-ticker"))
            .args(["--db", "host=127.0.0.1 dbname=x", "--check-config"])
            .env_remove("DATABASE_URL")
            .env(var, value)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{var}: {log}");
        assert!(log.contains(expect), "{var}: {log}");
    }
}

/// Run the ticker against an unreachable database until it gives up; its stderr.
fn run_unreachable(wrap_in_pty: bool, no_color: bool) -> String {
    let bin = env!("CARGO_BIN_EXE_pgq-ticker");
    let db = format!("host=127.0.0.1 port={} dbname=x", free_port());
    let mut cmd = if wrap_in_pty {
        // `script` gives the program a terminal; its output is the terminal's.
        let mut c = Command::new("script");
        c.args(["-qfec"])
            .arg(format!("{bin} --db '{db}' --exit-after-failure 1s"))
            .arg("/dev/null");
        c
    } else {
        let mut c = Command::new(bin);
        c.args(["--db", &db, "--exit-after-failure", "1s"]);
        c
    };
    cmd.env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // stderr is a pipe (as a file or journald would be): no escape codes.
    let log = run_unreachable(false, false);
    assert!(log.contains("could not connect"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
    // On a terminal: colour, unless NO_COLOR says otherwise.
    let log = run_unreachable(true, false);
    assert!(log.contains("could not connect"), "{log}");
    assert!(log.contains("\u{1b}["), "{log:?}");
    let log = run_unreachable(true, true);
    assert!(log.contains("could not connect"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
