//! R6, passwords: on a private cluster that requires SCRAM passwords, no password (right or
//! wrong) appears in the library's errors, the `pgq` CLI's errors, or any log line or error of
//! `pgq-ticker` (text and JSON), for a wrong password, an unreachable server and malformed
//! connection strings.

use std::time::Duration;

use pgq_core::QueueName;
use pgq_core::sqlx::PgPool;
use pgq_core::sqlx::postgres::PgPoolOptions;
use pgq_producer::Producer;
use pgq_testkit::{Cluster, TestDb};

use crate::support::{Proc, command, make_role};

/// The role's real password (characters that URLs must percent-encode, so both spellings are
/// checked).
pub(crate) const PASSWORD: &str = "Rl-pw:7@q/x%z";
/// A wrong password, as a typo would give.
const WRONG: &str = "Wr0ng-pw-4e1b";

/// Every spelling of the secrets that must never be printed.
fn secrets() -> Vec<String> {
    let enc = |s: &str| {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' | '~' => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect::<String>()
    };
    vec![PASSWORD.into(), enc(PASSWORD), WRONG.into()]
}

/// Fail if `text` (from `what`) contains a password.
pub(crate) fn assert_no_password(what: &str, text: &str) {
    for s in secrets() {
        assert!(
            !text.contains(&s),
            "{what} shows a password ({s:?}):\n{text}"
        );
    }
}

/// A database on a private cluster where `roles` must log in with a SCRAM password over TCP
/// (pg_hba.conf edited and reloaded); the superuser still connects without one.
pub(crate) async fn password_cluster() -> (Cluster, TestDb) {
    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    (cluster, db)
}

/// Require SCRAM passwords from `roles` (lines ahead of the testkit's `trust` lines).
pub(crate) async fn require_password(db: &TestDb, roles: &[&str]) {
    let hba = db
        .cluster()
        .data_dir()
        .expect("a private cluster")
        .join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    let mut new: String = roles
        .iter()
        .map(|r| format!("host all \"{r}\" 127.0.0.1/32 scram-sha-256\n"))
        .collect();
    new.push_str(&old);
    std::fs::write(&hba, new).unwrap();
    crate::support::exec(db.pool(), "select pg_reload_conf()").await;
    // The reload is asynchronous: wait until a password-less login is refused.
    let url = db.url_as(roles[0], None);
    crate::support::wait_for("pg_hba.conf to be reloaded", || async {
        PgPool::connect(&url).await.is_err()
    })
    .await;
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    pgq_testkit::free_port()
}

/// Display, alternate Display, Debug and every source of an error.
fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{e}\n{e:#}\n{e:?}\n");
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(&format!("{s}\n{s:?}\n"));
        src = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_library_errors_cli_errors_or_ticker_logs() {
    let (_cluster, db) = password_cluster().await;
    let role = make_role(&db, "pw", "pgq_admin", Some(PASSWORD)).await;
    require_password(&db, &[&role]).await;
    pgq_core::create_queue(db.pool(), &QueueName::new("pw").unwrap())
        .await
        .unwrap();
    let right = db.url_as(&role, Some(PASSWORD));
    let wrong = db.url_as(&role, Some(WRONG));
    let unreachable = format!(
        "postgres://{role}:{WRONG}@127.0.0.1:{}/{}",
        closed_port(),
        db.name()
    );
    let bad_port = format!("postgres://{role}:{WRONG}@127.0.0.1:99999/{}", db.name());
    let keywords = format!(
        "host=127.0.0.1 port={} user={role} password={WRONG} dbname={}",
        db.cluster().port(),
        db.name()
    );
    // The right password works (so the wrong one fails for the right reason).
    PgPool::connect(&right).await.unwrap();

    // The library: a pool's error, and the producer's, consumer's and core's errors on it.
    for (label, url) in [("wrong password", &wrong), ("unreachable", &unreachable)] {
        // (A pool keeps retrying a refused connection until its acquire timeout.)
        let options = PgPoolOptions::new().acquire_timeout(Duration::from_secs(1));
        let e = options.clone().connect(url).await.unwrap_err();
        assert_no_password(&format!("sqlx error ({label})"), &render(&e));
        let pool = options.connect_lazy(url).unwrap();
        let queue = QueueName::new("pw").unwrap();
        let e = Producer::new(queue.clone())
            .send(&pool, &pgq_core::NewEvent::new("t", "x"))
            .await
            .unwrap_err();
        assert_no_password(&format!("producer error ({label})"), &render(&e));
        let e = pgq_consumer::Consumer::builder(pool.clone(), queue.clone(), "c".parse().unwrap())
            .build()
            .unwrap()
            .register()
            .await
            .unwrap_err();
        assert_no_password(&format!("consumer error ({label})"), &render(&e));
        let e = pgq_core::create_queue(&pool, &queue).await.unwrap_err();
        assert_no_password(&format!("core error ({label})"), &render(&e));
    }

    // The CLI: connection failures, a malformed URL, a password from PGPASSWORD; text and JSON.
    for (label, db_arg, env_pw) in [
        ("wrong password", wrong.as_str(), None),
        ("unreachable", unreachable.as_str(), None),
        ("bad port", bad_port.as_str(), None),
        ("keywords", keywords.as_str(), None),
        ("PGPASSWORD", &*db.url_as(&role, None), Some(WRONG)),
    ] {
        for json in [false, true] {
            let mut cmd = command("pgq");
            if json {
                cmd.arg("--json");
            }
            cmd.args(["--db", db_arg, "--connect-timeout", "5s", "queue", "list"]);
            if let Some(pw) = env_pw {
                cmd.env("PGPASSWORD", pw);
            }
            let o = cmd.output().unwrap();
            let what = format!("pgq ({label}, json {json})");
            assert_ne!(o.status.code(), Some(0), "{}", crate::describe(&what, &o));
            assert_no_password(&what, &crate::describe(&what, &o));
        }
    }

    // The ticker: ticking with the right password (debug logging of every crate), then failing
    // ones, in both log formats.
    for format in ["text", "json"] {
        let mut cmd = command("pgq-ticker");
        cmd.args([
            "--db",
            &right,
            "--ticker-period",
            "100ms",
            "--log-format",
            format,
        ])
        .env("RUST_LOG", "debug");
        let mut ok = Proc::spawn(cmd);
        crate::support::wait_for("the ticker to tick", || async {
            ok.log().contains("ticking")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        ok.sigkill();
        assert_no_password(&format!("ticker log ({format})"), &ok.log());

        for (label, db_arg) in [
            ("wrong password", wrong.as_str()),
            ("unreachable", unreachable.as_str()),
            ("keywords", keywords.as_str()),
        ] {
            let mut cmd = command("pgq-ticker");
            cmd.args([
                "--db",
                db_arg,
                "--exit-after-failure",
                "1s",
                "--log-format",
                format,
            ])
            .env("RUST_LOG", "debug");
            let mut p = Proc::spawn(cmd);
            let code = p.wait_exit();
            let what = format!("ticker ({label}, {format})");
            assert_eq!(code, Some(3), "{what}\n{}", p.log());
            assert_no_password(&what, &p.log());
        }
    }

    // Malformed configuration carrying a password: the error names the problem, not the secret.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("t.toml");
    std::fs::write(&toml, format!("databases = [\"{wrong}\" oops]\n")).unwrap();
    let toml_type = dir.path().join("type.toml");
    std::fs::write(&toml_type, format!("databases = \"{wrong}\"\n")).unwrap();
    let ini = dir.path().join("pgqd.ini");
    std::fs::write(
        &ini,
        format!(
            "[pgqd]\nbase_connstr = user={role} password={WRONG} port=abc\ndatabase_list = x\n"
        ),
    )
    .unwrap();
    for (i, args) in [
        vec![toml.display().to_string()],
        vec![toml_type.display().to_string()],
        vec![ini.display().to_string()],
        vec!["--db".into(), bad_port.clone()],
        vec!["--db".into(), format!("{keywords} sslmode=sometimes")],
        vec!["--check-config".into(), "--db".into(), right.clone()],
    ]
    .into_iter()
    .enumerate()
    {
        let o = command("pgq-ticker").args(&args).output().unwrap();
        // (Not the arguments: they hold the password.)
        let what = format!("pgq-ticker with bad configuration #{i}");
        if args[0] != "--check-config" {
            assert_eq!(o.status.code(), Some(1), "{}", crate::describe(&what, &o));
        }
        assert_no_password(&what, &crate::describe(&what, &o));
    }
}
