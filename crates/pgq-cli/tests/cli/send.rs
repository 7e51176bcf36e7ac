//! `pgq send`.

use std::io::Write;

use pgq_testkit::TestDb;

use crate::util::{bare, fails, json, ok, pgq, run_fails, run_ok, stored_events};

/// A login role with only `pgq_writer` (and `pgq_reader`), for the set-based path; unique to
/// the test's database (roles are cluster-wide and tests run in parallel).
async fn writer_url(db: &TestDb) -> String {
    let role = db
        .create_role("writer", "pgq_writer, pgq_reader", None)
        .await;
    db.url_as(&role, None)
}

fn file(lines: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(lines.as_bytes()).unwrap();
    f
}

const GOOD: &str = r#"{"type":"order.created","data":"{\"id\":1}","extra1":"shop-1"}

{"type":"order.paid","data":{"id":1,"total":[1,2]},"extra4":"x"}
{"type":"order.shipped","data":"plain text with\ttab"}
"#;

#[tokio::test]
async fn one_event_from_arguments() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let r = json(
        &db,
        &[
            "send", "q", "--type", "t", "--data", "d", "--extra1", "e1", "--extra2", "e2",
            "--extra3", "e3", "--extra4", "e4",
        ],
    );
    assert_eq!(r["queue_name"], "q");
    assert_eq!(r["events"], 1);
    assert!(r["ev_id"].is_i64(), "{r}");
    assert_eq!(r["method"], "insert");
    let text = ok(&db, &["send", "q", "--type", "t", "--data", "d"]);
    assert!(text.starts_with("sent event "), "{text}");
    assert_eq!(stored_events(&db).await, 2);
    // --type and --data go together, and not with --file.
    fails(&db, &["send", "q", "--type", "t"], 2);
    fails(&db, &["send", "q"], 2);
    fails(
        &db,
        &["send", "q", "--type", "t", "--data", "d", "--file", "-"],
        2,
    );
}

#[tokio::test]
async fn file_via_copy_as_admin() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let f = file(GOOD);
    let r = json(&db, &["send", "q", "--file", f.path().to_str().unwrap()]);
    assert_eq!(r["events"], 3);
    assert_eq!(r["method"], "copy");
    assert!(r["events_per_sec"].is_f64(), "{r}");
    assert_eq!(stored_events(&db).await, 3);
    // The same from standard input, human output.
    let mut c = pgq(&db, &["send", "q", "--file", "-"]);
    c.write_stdin(GOOD);
    let out = run_ok(c, &["send", "--file", "-"]);
    assert!(
        out.contains("sent 3 events to queue \"q\"") && out.contains("COPY"),
        "{out}"
    );
    assert_eq!(stored_events(&db).await, 6);
}

#[tokio::test]
async fn file_via_set_based_insert_as_writer() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let url = writer_url(&db).await;
    let f = file(GOOD);
    let mut c = bare();
    c.args([
        "--db",
        &url,
        "--json",
        "send",
        "q",
        "--file",
        f.path().to_str().unwrap(),
    ]);
    let out = run_ok(c, &["send as writer"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["events"], 3);
    assert_eq!(r["method"], "insert");
    assert_eq!(stored_events(&db).await, 3);
    // Many events: more than one set-based statement.
    let many: String = (0..2500)
        .map(|i| format!("{{\"type\":\"n\",\"data\":\"{i}\"}}\n"))
        .collect();
    let mut c = bare();
    c.args(["--db", &url, "send", "q", "--file", "-"])
        .write_stdin(many);
    let out = run_ok(c, &["send many as writer"]);
    assert!(
        out.contains("sent 2500 events") && out.contains("set-based"),
        "{out}"
    );
    assert_eq!(stored_events(&db).await, 2503);
}

#[tokio::test]
async fn malformed_lines_report_the_line_number_and_send_nothing() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let url = writer_url(&db).await;
    let cases = [
        ("{\"type\":\"a\",\"data\":\"x\"}\nnot json\n", 2, "expected"),
        (
            "{\"type\":\"a\",\"data\":\"x\"}\n\n{\"type\":\"b\"}\n",
            3,
            "missing field `data`",
        ),
        (
            "{\"type\":\"a\",\"data\":\"x\",\"typo\":1}\n",
            1,
            "unknown field `typo`",
        ),
        ("{\"type\":\"a\",\"data\":null}\n", 1, "`data` is null"),
        (
            "{\"type\":\"a\",\"data\":\"x\",\"extra1\":5}\n",
            1,
            "invalid type",
        ),
        ("{\"type\":\"a\",\"data\":\"nul\\u0000byte\"}\n", 1, "NUL"),
    ];
    for (body, line, what) in cases {
        // Preceded by many good lines, so that some were already streamed to the server.
        let good: String = (0..3000)
            .map(|i| format!("{{\"type\":\"ok\",\"data\":\"{i}\"}}\n"))
            .collect();
        let body = format!("{good}{body}");
        let line = line + 3000;
        let f = file(&body);
        let path = f.path().to_str().unwrap().to_owned();
        for as_writer in [false, true] {
            let mut c = bare();
            if as_writer {
                c.args(["--db", &url]);
            } else {
                c.args(["--db", &db.url()]);
            }
            c.args(["send", "q", "--file", &path]);
            let err = run_fails(c, &["send", &path], 1);
            assert!(
                err.contains(&format!("{path}:{line}:")) && err.contains(what),
                "writer={as_writer}: {err}"
            );
            assert!(err.contains("nothing was sent"), "{err}");
            assert_eq!(stored_events(&db).await, 0, "writer={as_writer}: {err}");
        }
    }
    let err = fails(
        &db,
        &["send", "q", "--file", "/nonexistent/events.jsonl"],
        1,
    );
    assert!(err.contains("opening /nonexistent/events.jsonl"), "{err}");
    // An empty file sends nothing and succeeds.
    let f = file("\n\n");
    let r = json(&db, &["send", "q", "--file", f.path().to_str().unwrap()]);
    assert_eq!(r["events"], 0);
}

#[tokio::test]
async fn queue_settings_are_enforced() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["queue", "config", "q", "disable_insert=true"]);
    let err = fails(&db, &["send", "q", "--type", "t", "--data", "d"], 1);
    assert!(err.contains("disable_insert=false"), "{err}");
    ok(
        &db,
        &[
            "queue",
            "config",
            "q",
            "disable_insert=false",
            "per_tx_limit=2",
        ],
    );
    let f = file(GOOD);
    let err = fails(&db, &["send", "q", "--file", f.path().to_str().unwrap()], 1);
    assert!(err.contains("per-transaction"), "{err}");
    assert_eq!(stored_events(&db).await, 0);
}

#[tokio::test]
async fn bom_and_array_lines_say_what_is_wrong_and_send_nothing() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let url = writer_url(&db).await;
    let cases = [
        (
            "\u{feff}{\"type\":\"a\",\"data\":\"x\"}\n",
            1,
            "byte order mark",
        ),
        (
            "{\"type\":\"a\",\"data\":\"x\"}\n[{\"type\":\"a\",\"data\":\"x\"}]\n",
            2,
            "is a JSON array, but each line must be one JSON object",
        ),
        // The positional form of an event would otherwise be read as one.
        (
            "{\"type\":\"a\",\"data\":\"x\"}\n[\"a\",\"x\"]\n",
            2,
            "is a JSON array",
        ),
        ("\"just a string\"\n", 1, "is a JSON string"),
    ];
    let mut cases: Vec<(Vec<u8>, usize, &str)> = cases
        .into_iter()
        .map(|(body, line, what)| (body.as_bytes().to_vec(), line, what))
        .collect();
    cases.push((
        b"{\"type\":\"a\",\"data\":\"x\"}\n{\"type\":\"a\",\"data\":\"\xff\"}\n".to_vec(),
        2,
        "not valid UTF-8",
    ));
    for (body, line, what) in cases {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&body).unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        for as_writer in [false, true] {
            let mut c = bare();
            let target = if as_writer { url.clone() } else { db.url() };
            c.args(["--db", &target]);
            c.args(["send", "q", "--file", &path]);
            let err = run_fails(c, &["send", &path], 1);
            assert!(
                err.contains(&format!("{path}:{line}: ")) && err.contains(what),
                "writer={as_writer}: {err}"
            );
            assert!(err.contains("nothing was sent"), "{err}");
            assert_eq!(stored_events(&db).await, 0, "writer={as_writer}: {err}");
        }
    }
}

/// A 300 MiB line without a line break is refused once it passes the 64 MiB limit: `pgq` stops
/// reading there (the writer of its standard input sees the pipe closed before it is done),
/// reports the line number and sends nothing.
#[tokio::test]
async fn an_overlong_line_is_refused_without_reading_it_whole() {
    use std::process::{Command, Stdio};
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgq"))
        .args(["--db", &db.url(), "send", "q", "--file", "-"])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || -> Result<usize, std::io::Error> {
        stdin.write_all(b"{\"type\":\"ok\",\"data\":\"first\"}\n{\"type\":\"t\",\"data\":\"")?;
        let chunk = vec![b'x'; 1 << 20];
        let mut written = 0;
        for _ in 0..300 {
            stdin.write_all(&chunk)?;
            written += chunk.len();
        }
        Ok(written)
    });
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("standard input:2: the line is longer than 64 MiB"),
        "{err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    let w = writer.join().unwrap();
    assert!(
        w.is_err(),
        "pgq read the whole 300 MiB line instead of stopping at the limit"
    );
    assert_eq!(stored_events(&db).await, 0);
}
