//! R5, payloads: NUL bytes, oversized fields and invalid JSON lines, through the library's
//! `Producer` and `pgq send --file`. Each is refused with an error that says where, and nothing
//! is inserted.

use std::io::Write;

use pgq_core::{NewEvent, QueueName};
use pgq_producer::{ErrorKind, Producer};
use pgq_testkit::TestDb;

use crate::names::pgq;
use crate::{describe, snapshot};

#[tokio::test]
async fn producer_refuses_nul_and_oversized_fields_and_inserts_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = QueueName::new("p").unwrap();
    pgq_core::create_queue(pool, &queue).await.unwrap();
    let producer = Producer::new(queue);
    // Over PostgreSQL's 1 GiB field limit; zeroed memory is not touched until read.
    let huge = String::from_utf8(vec![0u8; pgq_core::MAX_FIELD_BYTES + 1]).unwrap();
    let ok = NewEvent::new("t", "fine");
    let cases: Vec<(&str, NewEvent, ErrorKind, &str)> = vec![
        (
            "NUL in data",
            NewEvent::new("t", "a\0b"),
            ErrorKind::NulByte,
            "ev_data",
        ),
        (
            "NUL in type",
            NewEvent::new("t\0", "x"),
            ErrorKind::NulByte,
            "ev_type",
        ),
        (
            "NUL in extra3",
            NewEvent {
                extra3: Some("\0".into()),
                ..NewEvent::new("t", "x")
            },
            ErrorKind::NulByte,
            "extra3",
        ),
        (
            "oversized data",
            NewEvent::new("t", huge),
            ErrorKind::TooLarge,
            "ev_data",
        ),
    ];
    for (label, bad, kind, field) in cases {
        let before = snapshot(pool).await;
        let e = producer.send(pool, &bad).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{label}: {e}");
        assert!(e.to_string().contains(field), "{label}: {e}");
        // In a batch, the bad event is named by position and the good ones are not sent.
        let batch = [ok.clone(), ok.clone(), bad];
        let e = producer.send_batch(pool, &batch).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{label}: {e}");
        assert!(e.to_string().starts_with("event 2:"), "{label}: {e}");
        assert_eq!(snapshot(pool).await, before, "{label}: database changed");
    }
}

fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

#[tokio::test]
async fn pgq_send_file_refuses_bad_lines_naming_them_and_sends_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &QueueName::new("p").unwrap())
        .await
        .unwrap();
    let good = r#"{"type":"t","data":{"id":1}}"#;
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "invalid JSON",
            format!("{good}\n{{not json\n").into_bytes(),
            ":2:",
        ),
        (
            "truncated object",
            format!("{good}\n{good}\n{{\"type\":\"t\",").into_bytes(),
            ":3:",
        ),
        ("missing type", b"{\"data\":1}\n".to_vec(), ":1:"),
        (
            "null data",
            b"{\"type\":\"t\",\"data\":null}\n".to_vec(),
            ":1:",
        ),
        (
            "unknown field",
            format!("{good}\n{{\"type\":\"t\",\"data\":1,\"colour\":2}}\n").into_bytes(),
            ":2:",
        ),
        (
            "NUL in data",
            format!("{good}\n{{\"type\":\"t\",\"data\":\"a\\u0000b\"}}\n").into_bytes(),
            ":2:",
        ),
        (
            "NUL in extra",
            format!("{{\"type\":\"t\",\"data\":1,\"extra1\":\"\\u0000\"}}\n{good}\n").into_bytes(),
            ":1:",
        ),
        (
            "not UTF-8",
            [good.as_bytes(), b"\n\xff\xfe\x00garbage\n"].concat(),
            ":2:",
        ),
        ("a JSON array", format!("[{good}]\n").into_bytes(), ":1:"),
    ];
    for (label, content, where_) in cases {
        let f = file(&content);
        let before = snapshot(pool).await;
        let path = f.path().to_str().unwrap();
        let o = pgq(&db, &["send", "p", "--file", path]);
        assert_eq!(o.status.code(), Some(1), "{}", describe(label, &o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(where_), "{}", describe(label, &o));
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(snapshot(pool).await, before, "{label}: database changed");
    }
    let before = snapshot(pool).await;
    let o = pgq(&db, &["send", "p", "--file", "/nonexistent/events.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe("missing file", &o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/events.jsonl"));
    assert_eq!(snapshot(pool).await, before);
}
