//! `pgq install --backend`, `pgq install --check` and `pgq status` with the backend.

use pgq_testkit::TestDb;

fn pgq(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = pgq_testkit::command("pgq")
        .arg("--db")
        .arg(db.url())
        .args(args)
        .output()
        .expect("runs pgq");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn install_takes_a_backend_and_check_and_status_report_it() {
    let db = TestDb::new_without_schema().await;
    let (ok, out, err) = pgq(&db, &["--json", "install", "--backend", "sql"]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["backend"], "sql", "{r}");
    assert_eq!(r["pgq_version"], pgq_core::SQL_BACKEND_VERSION);

    let (ok, out, err) = pgq(&db, &["install", "--backend", "extension"]);
    assert!(
        !ok,
        "a database on the SQL backend refuses the extension: {out}"
    );
    assert!(err.contains("never switched"), "{err}");
    let (ok, out, err) = pgq(&db, &["install", "--backend", "nonsense"]);
    assert!(!ok, "{out}");
    assert!(err.contains("extension") && err.contains("sql"), "{err}");

    let (ok, out, err) = pgq(&db, &["install"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("already installed") && out.contains("sql backend"),
        "{out}"
    );
    let (ok, out, err) = pgq(&db, &["--json", "install", "--check"]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["backend"], "sql", "{c}");
    assert_eq!(c["schema_up_to_date"], true, "{c}");
    let (ok, out, err) = pgq(&db, &["install", "--check"]);
    assert!(ok, "{err}");
    assert!(out.contains("(sql backend)"), "{out}");
    let (_, out, err) = pgq(&db, &["--json", "status"]);
    let s: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(s["backend"], "sql", "{s}");
}
