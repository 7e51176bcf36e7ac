//! R5, names: empty, 10 kB, quotes, NUL, SQL injection, Unicode, leading/trailing whitespace,
//! control characters — through the library (`QueueName`, `ConsumerName`, `Producer`, the
//! `Consumer` builder) and the CLI. Bad names are refused with a clear error and change
//! nothing; odd but valid names work end to end and inject nothing.

use futures_util::TryStreamExt;
use pgq_consumer::Consumer;
use pgq_core::{ConsumerName, ErrorKind, NewEvent, QueueName};
use pgq_producer::Producer;
use pgq_testkit::TestDb;

use crate::support::{command, exec, scalar};
use crate::{describe, snapshot};

struct Case {
    label: &'static str,
    name: String,
    /// Valid as a queue name / as a consumer name.
    queue_ok: bool,
    consumer_ok: bool,
    /// The error message must contain this (for refused names).
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |label, name: &str, queue_ok, consumer_ok, reason| Case {
        label,
        name: name.to_owned(),
        queue_ok,
        consumer_ok,
        reason,
    };
    vec![
        case("empty", "", false, false, "must not be empty"),
        case("10 kB", &"n".repeat(10 * 1024), false, false, "too long"),
        case("64 bytes", &"q".repeat(64), false, true, "at most 63 bytes"),
        case("quotes", r#"it's "quoted""#, true, true, ""),
        case("NUL", "a\0b", false, false, "NUL"),
        case("injection", "'; drop table x; --", true, true, ""),
        case("unicode", "名前-ünï-🎉", true, true, ""),
        case("leading space", " q", false, false, "whitespace"),
        case("trailing space", "q ", false, false, "whitespace"),
        case(
            "control character",
            "a\tb",
            false,
            false,
            "control characters",
        ),
        case("newline", "a\nb", false, false, "control characters"),
    ]
}

fn check_refused<T: std::fmt::Debug>(
    what: &str,
    case: &Case,
    r: Result<T, pgq_core::Error>,
) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidName,
                "{what} {}: {e}",
                case.label
            );
            let msg = e.to_string();
            assert!(
                msg.contains(case.reason) && msg.contains(what),
                "{what} {}: unclear error {msg:?}",
                case.label
            );
            None
        }
    }
}

#[tokio::test]
async fn library_refuses_bad_names_and_handles_odd_valid_ones() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(pool, "create table x (id int)").await;
    for case in cases() {
        let before = snapshot(pool).await;
        let queue = check_refused("queue name", &case, QueueName::new(case.name.as_str()));
        let consumer = check_refused(
            "consumer name",
            &case,
            ConsumerName::new(case.name.as_str()),
        );
        assert_eq!(queue.is_some(), case.queue_ok, "{}", case.label);
        assert_eq!(consumer.is_some(), case.consumer_ok, "{}", case.label);
        // Names are checked when made, so a bad one never reaches Producer or Consumer.
        let (Some(queue), Some(consumer)) = (queue, consumer) else {
            assert_eq!(
                snapshot(pool).await,
                before,
                "{}: database changed",
                case.label
            );
            continue;
        };

        // Valid but odd: the queue does not exist yet, which both refuse without changing
        // anything (the consumer creates no dead-letter queue and no subscription).
        let producer = Producer::new(queue.clone());
        let e = producer
            .send(pool, &NewEvent::new("t", "x"))
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            pgq_producer::ErrorKind::Core(ErrorKind::QueueNotFound),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("{:?}", queue.as_str())),
            "{e}"
        );
        let c = Consumer::builder(pool.clone(), queue.clone(), consumer.clone())
            .build()
            .unwrap();
        let e = c
            .run(
                pgq_consumer::handler_fn(|_| async { Ok(()) }),
                pgq_consumer::CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            pgq_consumer::ErrorKind::Core(ErrorKind::QueueNotFound),
            "{e}"
        );
        assert_eq!(
            snapshot(pool).await,
            before,
            "{}: database changed",
            case.label
        );

        // Created, it works end to end with the name stored exactly.
        pgq_core::create_queue(pool, &queue).await.unwrap();
        c.register().await.unwrap();
        producer
            .send(pool, &NewEvent::new("t", case.label))
            .await
            .unwrap();
        pgq_core::tick_now(&mut pool.acquire().await.unwrap(), &queue)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mut batch = c.next_batch(&mut conn).await.unwrap().expect("a batch");
        let events: Vec<_> = batch.events().try_collect().await.unwrap();
        assert_eq!(events.len(), 1, "{}", case.label);
        assert_eq!(events[0].ev_data.as_deref(), Some(case.label));
        batch.finish().await.unwrap();
        drop(conn);
        let stored = pgq_core::sqlx::query_scalar::<_, i64>(
            "select count(*) from pgq.queue where queue_name = $1",
        )
        .bind(queue.as_str())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(stored, 1, "{}", case.label);
        assert_eq!(
            scalar(pool, "select count(*) from x").await,
            0,
            "table x intact"
        );
    }
}

#[tokio::test]
async fn consumer_builder_accepts_the_longest_queue_name() {
    let db = TestDb::new().await;
    let queue = QueueName::new("q".repeat(QueueName::MAX_LEN)).unwrap();
    Consumer::builder(db.pool().clone(), queue, ConsumerName::new("c").unwrap())
        .build()
        .unwrap();
}

/// `pgq ARGS` against `db`; its output.
pub(crate) fn pgq(db: &TestDb, args: &[&str]) -> std::process::Output {
    command("pgq")
        .arg("--db")
        .arg(db.url())
        .args(args)
        .output()
        .expect("run pgq")
}

#[tokio::test]
async fn cli_refuses_bad_names_as_usage_errors_and_handles_odd_valid_ones() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(pool, "create table x (id int)").await;
    pgq_core::create_queue(pool, &QueueName::new("q").unwrap())
        .await
        .unwrap();
    for case in cases() {
        if case.name.contains('\0') {
            continue; // a command line cannot carry NUL (the library case covers it)
        }
        let n = case.name.as_str();
        let before = snapshot(pool).await;
        let runs: [(&[&str], bool); 4] = [
            (&["queue", "create", n], case.queue_ok),
            (&["consumer", "register", "q", n], case.consumer_ok),
            (&["send", n, "--type", "t", "--data", "d"], case.queue_ok),
            (&["queue", "info", n], case.queue_ok),
        ];
        for (args, valid) in runs {
            if valid {
                continue;
            }
            let o = pgq(&db, args);
            let what = format!("pgq {:?} ({})", &args[..args.len().min(2)], case.label);
            assert_eq!(o.status.code(), Some(2), "{}", describe(&what, &o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(case.reason) && err.contains("name"),
                "{}",
                describe(&what, &o)
            );
            assert!(!err.contains("panicked"), "{err}");
        }
        assert_eq!(
            snapshot(pool).await,
            before,
            "{}: database changed",
            case.label
        );

        if case.queue_ok && case.consumer_ok {
            for args in [
                &["queue", "create", n][..],
                &["consumer", "register", n, n],
                &["send", n, "--type", "t", "--data", "d"],
            ] {
                let o = pgq(&db, args);
                assert_eq!(o.status.code(), Some(0), "{}", describe(case.label, &o));
            }
            let events = pgq_core::sqlx::query_scalar::<_, i64>(
                "select count(*) from pgq.event_template where tableoid in \
                 (select inhrelid from pg_inherits where inhparent = \
                  (select queue_data_pfx::regclass from pgq.queue where queue_name = $1))",
            )
            .bind(n)
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(events, 1, "{}", case.label);
        }
    }
    assert_eq!(
        scalar(pool, "select count(*) from x").await,
        0,
        "table x intact"
    );
}
