//! Names and event text from the database never reach the terminal raw: control characters
//! (terminal escape sequences) and invisible formatting characters (bidirectional overrides,
//! zero-width characters) are escaped in every table and line for people; new names with them are
//! refused.

use std::process::Output;

use pgq_testkit::TestDb;

use crate::util::{exec, json, ok, pgq, scalar};

/// A consumer name that clears the screen and then displays reversed.
const EVIL_CONSUMER: &str = "evil\u{1b}[2J\u{202e}tixe";
/// A queue name that turns the terminal red, with a zero-width space.
const EVIL_QUEUE: &str = "red\u{1b}[31m\u{200b}q";

/// Characters that must never appear raw in human output.
fn raw_bad(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| (c.is_control() && c != '\n') || pgq_core::is_invisible_format(c))
}

fn check_clean(args: &[&str], o: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    for (stream, text) in [("stdout", &out), ("stderr", &err)] {
        if let Some(c) = raw_bad(text) {
            panic!("pgq {args:?}: raw {c:?} on {stream}:\n{text:?}");
        }
    }
    (out, err)
}

#[tokio::test]
async fn names_with_escapes_registered_through_sql_are_printed_escaped() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    ok(&db, &["consumer", "register", "q", "c"]);
    // Registered through SQL, as the CLI and the library refuse such names.
    exec(
        &db,
        &format!(
            "select pgq.register_consumer('q', {}); select pgq.create_queue({});
             update pgq.queue set queue_ticker_paused = true where queue_name = {}",
            pgq_core::quote_literal(EVIL_CONSUMER),
            pgq_core::quote_literal(EVIL_QUEUE),
            pgq_core::quote_literal(EVIL_QUEUE),
        ),
    )
    .await;
    ok(
        &db,
        &[
            "send",
            "q",
            "--type",
            "t\u{1b}]0;title\u{7}",
            "--data",
            "d\u{202e}x",
        ],
    );
    ok(&db, &["tick", "q"]);
    let n: i64 = scalar(&db, "select count(*) from pgq.consumer").await;
    assert_eq!(n, 2, "the evil consumer exists");

    let mut shown = String::new();
    for args in [
        &["consumer", "list"][..],
        &["consumer", "list", "q"],
        &["status"],
        &["queue", "list"],
        &["queue", "info", "q"],
        &["install", "--check"],
        &["tail", "q", "c"],
    ] {
        let o = pgq(&db, args).output().unwrap();
        let (out, err) = check_clean(args, &o);
        shown.push_str(&out);
        shown.push_str(&err);
    }
    // Escaped, not dropped: a person can see what the names are.
    for escaped in [
        r"evil\u{1b}[2J\u{202e}tixe",
        r"red\u{1b}[31m\u{200b}q",
        r"t\u{1b}]0;title\u{7}",
        r"d\u{202e}x",
    ] {
        assert!(shown.contains(escaped), "{escaped} missing from:\n{shown}");
    }
    // The paused-queue warning's hint can be pasted into bash.
    assert!(
        shown.contains(r"pgq queue resume $'red\x1b[31m\u200bq'"),
        "{shown}"
    );
    // JSON keeps the names exact (JSON escapes control characters itself).
    let list = json(&db, &["consumer", "list", "q"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer_name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&EVIL_CONSUMER), "{list}");
}

#[tokio::test]
async fn new_names_with_bidi_or_zero_width_characters_are_refused() {
    let db = TestDb::new().await;
    ok(&db, &["queue", "create", "q"]);
    let before: String = scalar(
        &db,
        "select json_build_object('q', (select json_agg(q) from pgq.queue q),
                                  'c', (select json_agg(c) from pgq.consumer c))::text",
    )
    .await;
    for bad in [
        "a\u{202e}b",
        "a\u{2066}b",
        "a\u{200b}b",
        "a\u{200d}b",
        "a\u{2060}b",
        "\u{feff}ab",
    ] {
        for args in [
            &["queue", "create", bad][..],
            &["consumer", "register", "q", bad],
        ] {
            let o = pgq(&db, args).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "pgq {args:?}");
            let (_, err) = check_clean(args, &o);
            assert!(
                err.contains("bidirectional overrides or zero-width characters"),
                "pgq {args:?}: {err}"
            );
        }
    }
    let after: String = scalar(
        &db,
        "select json_build_object('q', (select json_agg(q) from pgq.queue q),
                                  'c', (select json_agg(c) from pgq.consumer c))::text",
    )
    .await;
    assert_eq!(before, after, "nothing was created");
}
