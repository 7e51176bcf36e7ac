//! R5, the ticker's configuration: TOML and pgqd.ini files with bad durations, unknown keys,
//! bad connection strings, garbage, a missing file, and bad flags. Each file also names a real
//! database with a queue that would be ticked at once: `pgq-ticker` must exit non-zero (1 for a
//! bad configuration, 2 for bad flags) with a message naming the problem, before ticking.

use std::io::Write;

use pgq_testkit::TestDb;

use crate::snapshot;
use crate::support::{Proc, busy_queue, command};

struct Case {
    label: &'static str,
    /// File name (its extension picks TOML or ini) and contents; `None`: flags only.
    file: Option<(&'static str, Vec<u8>)>,
    args: Vec<String>,
    code: i32,
    message: &'static str,
}

fn own(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn cases(db: &TestDb) -> Vec<Case> {
    let url = db.url();
    let toml = |body: &str| format!("databases = [\"{url}\"]\n{body}\n").into_bytes();
    let ini = |body: &str| {
        format!(
            "[pgqd]\nbase_connstr = host=127.0.0.1 port={} user=postgres\ndatabase_list = {}\n{body}\n",
            db.cluster().port(),
            db.name()
        )
        .into_bytes()
    };
    let file = |label, name, content, code, message| Case {
        label,
        file: Some((name, content)),
        args: Vec::new(),
        code,
        message,
    };
    let flags = |label, args: Vec<String>, code, message| Case {
        label,
        file: None,
        args,
        code,
        message,
    };
    let db_flag = |extra: &[&str]| {
        let mut v = vec!["--db", url.as_str()];
        v.extend_from_slice(extra);
        own(&v)
    };
    vec![
        file(
            "toml: bad duration",
            "t.toml",
            toml("ticker_period = \"abc\""),
            1,
            "ticker_period",
        ),
        file(
            "toml: negative duration",
            "t.toml",
            toml("ticker_period = -1"),
            1,
            "ticker_period",
        ),
        file(
            "toml: zero period",
            "t.toml",
            toml("maint_period = \"0s\""),
            1,
            "maint_period",
        ),
        file(
            "toml: unknown key",
            "t.toml",
            toml("tikcer_period = 1"),
            1,
            "tikcer_period",
        ),
        file(
            "toml: wrong type",
            "t.toml",
            toml("retry_period = [1, 2]"),
            1,
            "retry_period",
        ),
        file(
            "toml: bad log format",
            "t.toml",
            toml("log_format = \"xml\""),
            1,
            "xml",
        ),
        file(
            "toml: bad http address",
            "t.toml",
            toml("http = \"nonsense\""),
            1,
            "http",
        ),
        file(
            "toml: bad connstr",
            "t.toml",
            format!("databases = [\"{url}\", \"host=x port=abc\"]\n").into_bytes(),
            1,
            "invalid port number: \"abc\"",
        ),
        file(
            "toml: connstr garbage",
            "t.toml",
            format!("databases = [\"{url}\", \"just words\"]\n").into_bytes(),
            1,
            "databases",
        ),
        file(
            "toml: unknown server key",
            "t.toml",
            toml("[[servers]]\nbase_connstr = \"host=127.0.0.1\"\ndatabse_list = \"x\""),
            1,
            "databse_list",
        ),
        file(
            "toml: garbage",
            "t.toml",
            b"this is not ] toml [[\n".to_vec(),
            1,
            "t.toml",
        ),
        file(
            "toml: binary",
            "t.toml",
            b"\x00\xff\xfe\x01\x02".to_vec(),
            1,
            "t.toml",
        ),
        file(
            "ini: bad duration",
            "pgqd.ini",
            ini("ticker_period = abc"),
            1,
            "ticker_period",
        ),
        file(
            "ini: negative",
            "pgqd.ini",
            ini("connection_lifetime = -5"),
            1,
            "connection_lifetime",
        ),
        file(
            "ini: unknown key",
            "pgqd.ini",
            ini("tickr_period = 1"),
            1,
            "tickr_period",
        ),
        file(
            "ini: other section",
            "pgqd.ini",
            ini("[londiste]\nx = 1"),
            1,
            "[londiste]",
        ),
        file(
            "ini: no equals",
            "pgqd.ini",
            ini("ticker_period"),
            1,
            "key = value",
        ),
        file(
            "ini: bad connstr",
            "pgqd.ini",
            b"[pgqd]\nbase_connstr = host=127.0.0.1 port=abc\ndatabase_list = x\n".to_vec(),
            1,
            "invalid port number: \"abc\"",
        ),
        file(
            "ini: unterminated quote",
            "pgqd.ini",
            b"[pgqd]\nbase_connstr = host='127.0.0.1\ndatabase_list = x\n".to_vec(),
            1,
            "unterminated",
        ),
        file(
            "ini: bad syslog",
            "pgqd.ini",
            ini("syslog = perhaps"),
            1,
            "syslog",
        ),
        flags(
            "missing file",
            own(&["/nonexistent/pgqd.ini"]),
            1,
            "/nonexistent/pgqd.ini",
        ),
        flags(
            "flag: bad duration",
            db_flag(&["--ticker-period", "abc"]),
            2,
            "--ticker-period",
        ),
        flags(
            "flag: negative duration",
            db_flag(&["--ticker-period=-1s"]),
            2,
            "--ticker-period",
        ),
        flags(
            "flag: zero duration",
            db_flag(&["--fast-poll", "0"]),
            1,
            "fast_poll",
        ),
        flags(
            "flag: bad connstr",
            own(&["--db", "not a connection string"]),
            1,
            "--db",
        ),
        flags(
            "flag: bad url",
            own(&["--db", "postgres://u@127.0.0.1:notaport/db"]),
            1,
            "--db",
        ),
        flags(
            "flag: bad http",
            db_flag(&["--http", "localhost"]),
            1,
            "--http",
        ),
        flags(
            "flag: unknown",
            db_flag(&["--tick-period", "1s"]),
            2,
            "--tick-period",
        ),
    ]
}

#[tokio::test]
async fn bad_ticker_configuration_exits_non_zero_before_ticking() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "tc").await;
    let dir = tempfile::tempdir().unwrap();
    for case in cases(&db) {
        let mut args = case.args.clone();
        if let Some((name, content)) = &case.file {
            let path = dir.path().join(name);
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(content))
                .unwrap();
            args.insert(0, path.display().to_string());
        }
        // --check-config: validates and exits, whatever the outcome.
        let o = command("pgq-ticker")
            .arg("--check-config")
            .args(&args)
            .output()
            .unwrap();
        let what = format!("{}: pgq-ticker --check-config {args:?}", case.label);
        assert_eq!(
            o.status.code(),
            Some(case.code),
            "{}",
            crate::describe(&what, &o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(case.message), "{}", crate::describe(&what, &o));

        // Started for real: it refuses to start, and the database sees no tick.
        let before = snapshot(pool).await;
        let mut cmd = command("pgq-ticker");
        cmd.args(&args);
        let mut p = Proc::spawn(cmd);
        let code = p.wait_exit();
        assert_eq!(code, Some(case.code), "{what}\n{}", p.log());
        assert!(p.log().contains(case.message), "{what}\n{}", p.log());
        assert!(!p.log().contains("panicked"), "{what}\n{}", p.log());
        assert_eq!(snapshot(pool).await, before, "{what}: database changed");
    }
}
