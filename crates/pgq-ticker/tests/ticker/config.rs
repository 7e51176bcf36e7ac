//! Configuration: pgqd.ini keys, bad configurations, SIGHUP reload, clean stop.

use std::process::Command;

use pgq_testkit::TestDb;

use crate::util::{TICKER, TickerProc, busy_queue, eventually, tick_count, ticks_beyond};

fn check_config(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgq-ticker"))
        .args(args)
        .arg("--check-config")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pgq-ticker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The configuration the binary would run with for config file `path`.
fn config_of(path: &str) -> pgq_ticker::Result<pgq_ticker::Config> {
    pgq_ticker::Config::from_args(&pgq_ticker::Args {
        config: Some(path.into()),
        ..Default::default()
    })
}

#[test]
fn every_pgqd_ini_key_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write(
        &dir,
        "pgqd.ini",
        "[pgqd]\n\
         # comment\n\
         logfile = /tmp/pgq-ticker-test.log\n\
         pidfile = /tmp/pgq-ticker-test.pid\n\
         base_connstr = host=127.0.0.1 port=6543 user=pgq\n\
         initial_database = postgres\n\
         database_list = db_a, db_b\n\
         syslog = 0\n\
         syslog_ident = pgqd\n\
         syslog_facility = daemon\n\
         check_period = 61\n\
         retry_period = 31\n\
         maint_period = 121\n\
         ticker_period = 0.25\n\
         stats_period = 32\n\
         connection_lifetime = 3601\n",
    );
    // Every key pgqd knows is in the file above.
    for key in pgq_ticker::config::PGQD_INI_KEYS {
        assert!(
            std::fs::read_to_string(&ini)
                .unwrap()
                .contains(&format!("{key} =")),
            "{key}"
        );
    }
    let (code, out, err) = check_config(&[&ini]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("database 127.0.0.1:6543/db_a"), "{out}");
    assert!(out.contains("database 127.0.0.1:6543/db_b"), "{out}");
    for want in [
        "ticker_period 250ms",
        "retry_period 31s",
        "maint_period 2m 1s",
        "check_period 1m 1s",
        "stats_period 32s",
        "connection_lifetime 1h 1s",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    // The keys --check-config does not print: log file, pid file, syslog.
    let cfg = config_of(&ini).unwrap();
    assert_eq!(
        cfg.logfile.as_deref(),
        Some(std::path::Path::new("/tmp/pgq-ticker-test.log"))
    );
    assert_eq!(
        cfg.pidfile.as_deref(),
        Some(std::path::Path::new("/tmp/pgq-ticker-test.pid"))
    );
    assert_eq!(
        cfg.notes,
        Vec::<String>::new(),
        "syslog = 0: nothing to note"
    );
    let syslog_on = write(
        &dir,
        "syslog.ini",
        "[pgqd]\nbase_connstr = host=127.0.0.1\ndatabase_list = a\nsyslog = 1\n\
         syslog_ident = pgqd\nsyslog_facility = daemon\n",
    );
    let notes = config_of(&syslog_on).unwrap().notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("syslog = 1 is not supported")),
        "{notes:?}"
    );
    let syslog_bad = write(
        &dir,
        "syslog_bad.ini",
        "[pgqd]\nbase_connstr = host=127.0.0.1\ndatabase_list = a\nsyslog = maybe\n",
    );
    let err = config_of(&syslog_bad).unwrap_err().to_string();
    assert!(err.contains("syslog must be 0 or 1"), "{err}");
    // syslog_ident and syslog_facility are known keys (accepted above), unlike a misspelt one.
    let misspelt = write(
        &dir,
        "misspelt.ini",
        "[pgqd]\nbase_connstr = host=127.0.0.1\ndatabase_list = a\nsyslog_identity = pgqd\n",
    );
    let err = config_of(&misspelt).unwrap_err().to_string();
    assert!(err.contains("unknown key"), "{err}");
    // Without database_list: discovery through initial_database.
    let ini = write(
        &dir,
        "discover.ini",
        "[pgqd]\nbase_connstr = host=127.0.0.1 port=6543\ninitial_database = postgres\n",
    );
    let (code, out, err) = check_config(&[&ini]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("discover databases on 127.0.0.1:6543 via postgres"),
        "{out}"
    );
}

#[test]
fn bad_configurations_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bad.pid");
    let cases = [
        (
            "unknown.ini",
            format!(
                "[pgqd]\npidfile = {}\ntciker_period = 1\n",
                pidfile.display()
            ),
            "unknown key",
        ),
        (
            "period.ini",
            "[pgqd]\nticker_period = soon\n".to_owned(),
            "ticker_period",
        ),
        (
            "zero.ini",
            "[pgqd]\nticker_period = 0\n".to_owned(),
            "at least 1ms",
        ),
        (
            "section.ini",
            "[pgqx]\nticker_period = 1\n".to_owned(),
            "unknown section",
        ),
        (
            "connstr.ini",
            "[pgqd]\nbase_connstr = host\n".to_owned(),
            "base_connstr",
        ),
        ("bad.toml", "ticker_period = [1]\n".to_owned(), "bad.toml"),
        (
            "unknown.toml",
            "tick_period = 1\n".to_owned(),
            "unknown field",
        ),
    ];
    for (name, text, want) in cases {
        let path = write(&dir, name, &text);
        let mut child = TickerProc::spawn(TICKER, &[&path]);
        let code = child.wait_exit();
        assert_eq!(code, Some(1), "{name}: {}", child.logs());
        assert!(
            child.logs().contains(want),
            "{name}: want {want:?} in {}",
            child.logs()
        );
    }
    assert!(
        !pidfile.exists(),
        "nothing may start on a bad configuration"
    );
    let (code, _, err) = check_config(&["--db", "postgres://x/y", "--fast-poll", "nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = check_config(&["/nonexistent/pgqd.ini"]);
    assert_eq!(code, 1);
    assert!(err.contains("could not read config file"), "{err}");
}

#[tokio::test]
async fn sighup_adds_a_database() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    busy_queue(a.pool(), "qa").await;
    busy_queue(b.pool(), "qb").await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("host=127.0.0.1 port={} user=postgres", a.cluster().port());
    let ini = write(
        &dir,
        "pgqd.ini",
        &format!(
            "[pgqd]\nbase_connstr = {base}\ndatabase_list = {}\nticker_period = 0.1\n",
            a.name()
        ),
    );
    let t = TickerProc::spawn(TICKER, &[&ini]);
    let na = tick_count(a.pool(), "qa").await;
    ticks_beyond(a.pool(), "qa", na + 2).await;
    let nb = tick_count(b.pool(), "qb").await;
    write(
        &dir,
        "pgqd.ini",
        &format!(
            "[pgqd]\nbase_connstr = {base}\ndatabase_list = {}, {}\nticker_period = 0.1\n",
            a.name(),
            b.name()
        ),
    );
    t.signal("HUP");
    ticks_beyond(b.pool(), "qb", nb + 2).await;
    assert!(t.logs().contains("SIGHUP"), "{}", t.logs());
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_releases_the_lock() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "s").await;
    let mut t = TickerProc::spawn(TICKER, &["--db", &db.url(), "--ticker-period", "100ms"]);
    let n = tick_count(db.pool(), "s").await;
    ticks_beyond(db.pool(), "s", n + 1).await;
    t.signal("TERM");
    assert_eq!(t.wait_exit(), Some(0), "{}", t.logs());
    eventually("the ticker's sessions to be gone", || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where application_name = 'pgq-ticker' and datname = current_database()",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (n == 0).then_some(())
    })
    .await;
}
