//! The connection forms PostgreSQL users already know (pgq_core::connect): libpq key=value
//! strings, several hosts with target_session_attrs, service and password files, and libpq's
//! checks and defaults.

use pgq_testkit::{TestDb, free_port};

use crate::util::{bare, run_fails, run_ok};

#[tokio::test]
async fn libpq_keyword_strings_are_accepted() {
    let db = TestDb::new().await;
    let port = db.cluster().port();
    let connstr = format!(
        "host=127.0.0.1 port={port} dbname={} user=postgres",
        db.name()
    );
    let mut c = bare();
    c.args(["--db", &connstr, "queue", "create", "kw_q"]);
    run_ok(c, &["keyword string"]);
    // Several hosts, the first one down: the second one is used.
    let connstr = format!(
        "host=127.0.0.1,127.0.0.1 port={},{port} dbname={} user=postgres \
         target_session_attrs=read-write",
        free_port(),
        db.name()
    );
    let mut c = bare();
    c.args(["--db", &connstr, "queue", "list"]);
    let out = run_ok(c, &["first host down"]);
    assert!(out.contains("kw_q"), "{out}");
    // The URL form of several hosts.
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{port}/{}?target_session_attrs=read-write",
        free_port(),
        db.name()
    );
    let mut c = bare();
    c.args(["--db", &url, "queue", "list"]);
    assert!(run_ok(c, &["url hosts"]).contains("kw_q"));
    // A server that does not match target_session_attrs is skipped, and said so.
    let connstr = format!(
        "host=127.0.0.1 port={port} dbname={} user=postgres target_session_attrs=standby",
        db.name()
    );
    let mut c = bare();
    c.args(["--db", &connstr, "queue", "list"]);
    let err = run_fails(c, &["no standby"], 1);
    assert!(err.contains("not target_session_attrs=standby"), "{err}");
}

#[tokio::test]
async fn service_file_and_password_file() {
    let db = TestDb::new().await;
    let port = db.cluster().port();
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.conf");
    std::fs::write(
        &services,
        format!(
            "# test\n[pgq_test]\nhost=127.0.0.1\nport={port}\ndbname={}\nuser=postgres\n",
            db.name()
        ),
    )
    .unwrap();
    let mut c = bare();
    c.env("PGSERVICEFILE", &services)
        .env("PGSERVICE", "pgq_test")
        .args(["queue", "create", "svc_q"]);
    run_ok(c, &["PGSERVICE"]);
    let mut c = bare();
    c.env("PGSERVICEFILE", &services)
        .args(["--db", "service=pgq_test", "queue", "list"]);
    assert!(run_ok(c, &["service="]).contains("svc_q"));
    let mut c = bare();
    c.env("PGSERVICEFILE", &services)
        .args(["--db", "service=nope", "queue", "list"]);
    let err = run_fails(c, &["missing service"], 1);
    assert!(
        err.contains("definition of service \"nope\" not found"),
        "{err}"
    );

    // A service that is not there.
    drop(dir);
}

#[test]
fn invalid_sslmode_is_refused_as_libpq_does() {
    for (var, value) in [("PGSSLMODE", "requir"), ("PGTARGETSESSIONATTRS", "rw")] {
        let mut c = bare();
        c.env(var, value).args([
            "--db",
            &format!("host=127.0.0.1 port={} dbname=x", free_port()),
            "status",
        ]);
        let err = run_fails(c, &[var], 1);
        assert!(err.contains(&format!("{value:?}")), "{var}: {err}");
        assert!(!err.contains("could not connect"), "{var}: {err}");
    }
    let mut c = bare();
    c.args(["--db", "host=127.0.0.1 sslmode=requir", "status"]);
    let err = run_fails(c, &["sslmode="], 1);
    assert!(err.contains("invalid sslmode value: \"requir\""), "{err}");
}

#[test]
fn default_user_is_the_os_user_not_user_variable() {
    let port = free_port();
    let me = pgq_core::connect::os_user().unwrap();
    let mut c = bare();
    c.env("USER", "")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .args(["--db", &format!("host=127.0.0.1 port={port}"), "status"]);
    let err = run_fails(c, &["USER empty"], 1);
    assert!(
        err.contains(&format!("{me}@127.0.0.1:{port}/{me}")),
        "{err}"
    );
    assert!(!err.contains("anonymous"), "{err}");
}
