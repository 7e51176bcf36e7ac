//! Connection settings, unreachable servers, and passwords never printed.

use std::net::TcpListener;

use pgq_testkit::TestDb;

use crate::util::{bare, ok, run_fails, run_ok};

const SECRET: &str = "Sup3r-S3cret-pw";

use pgq_testkit::free_port;

#[test]
fn unreachable_server_is_a_clear_error_without_the_password() {
    let port = free_port();
    let url = format!("postgres://someone:{SECRET}@127.0.0.1:{port}/db");
    let mut c = bare();
    c.args(["--db", &url, "status"]);
    let err = run_fails(c, &["status unreachable"], 1);
    assert!(
        err.contains(&format!("could not connect to someone@127.0.0.1:{port}/db")),
        "{err}"
    );
    assert!(err.contains("check --db"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn silent_server_times_out() {
    // Accepts TCP connections (the backlog) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("postgres://someone:{SECRET}@127.0.0.1:{port}/db");
    let mut c = bare();
    c.args(["--db", &url, "--connect-timeout", "1s", "queue", "list"]);
    let err = run_fails(c, &["silent"], 1);
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    // PGCONNECT_TIMEOUT (seconds) is honoured too.
    let mut c = bare();
    c.env("PGCONNECT_TIMEOUT", "1")
        .args(["--db", &url, "status"]);
    let err = run_fails(c, &["silent"], 1);
    assert!(err.contains("no answer within 1s"), "{err}");
    drop(listener);
    let mut c = bare();
    c.args(["--connect-timeout", "soon", "status"]);
    run_fails(c, &["bad timeout"], 2);
}

#[test]
fn invalid_url_is_reported_without_the_password() {
    let mut c = bare();
    c.args([
        "--db",
        &format!("postgres://u:{SECRET}@host:99999/db"),
        "status",
    ]);
    let err = run_fails(c, &["bad url"], 1);
    assert!(
        err.contains("is not valid") && !err.contains(SECRET),
        "{err}"
    );
    let mut c = bare();
    c.env(
        "DATABASE_URL",
        format!("postgres://u:{SECRET}@host:nope/db"),
    )
    .arg("status");
    let err = run_fails(c, &["bad env url"], 1);
    assert!(
        err.contains("DATABASE_URL") && !err.contains(SECRET),
        "{err}"
    );
}

#[tokio::test]
async fn password_is_never_printed() {
    let db = TestDb::new().await;
    // The test cluster trusts local connections, so any password works.
    let url = db.url_as("postgres", Some(SECRET));
    let commands: [&[&str]; 8] = [
        &["status"],
        &["--json", "status"],
        &["queue", "create", "q"],
        &["queue", "info", "missing"],
        &["consumer", "list"],
        &["send", "missing", "--type", "t", "--data", "d"],
        &["tail", "q", "ghost"],
        &["install", "--check"],
    ];
    for args in commands {
        let mut c = bare();
        c.args(["--db", &url]).args(args);
        let o = c.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains(SECRET), "{args:?}: {all}");
        assert!(!all.contains("Sup3r"), "{args:?}: {all}");
    }
    // A password in PGPASSWORD stays out of messages too.
    let mut c = bare();
    c.env("PGPASSWORD", SECRET).args([
        "--db",
        &format!("postgres://x@127.0.0.1:{}/db", free_port()),
        "status",
    ]);
    let err = run_fails(c, &["PGPASSWORD"], 1);
    assert!(!err.contains(SECRET), "{err}");
}

#[tokio::test]
async fn database_url_and_pg_variables_are_used() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "from_db_flag"]);
    let mut c = bare();
    c.env("DATABASE_URL", db.url()).args(["queue", "list"]);
    assert!(run_ok(c, &["DATABASE_URL"]).contains("from_db_flag"));
    // --db wins over DATABASE_URL.
    let mut c = bare();
    c.env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .args(["--db", &db.url(), "queue", "list"]);
    assert!(run_ok(c, &["--db first"]).contains("from_db_flag"));
    // libpq variables when there is no URL at all.
    let mut c = bare();
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", db.cluster().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", db.name())
        .env("PGSSLMODE", "disable")
        .args(["queue", "list"]);
    assert!(run_ok(c, &["PG*"]).contains("from_db_flag"));
    // sslmode=require against a server without TLS fails clearly.
    let mut c = bare();
    c.args(["--db", &format!("{}?sslmode=require", db.url()), "status"]);
    let err = run_fails(c, &["sslmode"], 1);
    assert!(err.contains("could not connect"), "{err}");
}
