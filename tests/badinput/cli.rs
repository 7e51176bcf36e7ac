//! R5, the CLI's other arguments: bad durations, numbers and settings are usage errors (exit
//! 2) that say what is wrong; bad targets are failures (exit 1); nothing changes.

use pgq_core::QueueName;
use pgq_testkit::TestDb;

use crate::names::pgq;
use crate::{describe, snapshot};

#[tokio::test]
async fn bad_arguments_are_usage_errors_and_change_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &QueueName::new("q").unwrap())
        .await
        .unwrap();
    pgq_core::register_consumer(pool, &QueueName::new("q").unwrap(), &"c".parse().unwrap())
        .await
        .unwrap();
    // (args, exit code, a piece of the message)
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["queue", "create", "n", "--ticker-max-lag", "abc"],
            2,
            "invalid duration",
        ),
        (
            &["queue", "create", "n", "--ticker-max-lag=-5s"],
            2,
            "invalid duration",
        ),
        (
            &["queue", "create", "n", "--ticker-max-lag", "5 parsecs"],
            2,
            "invalid duration",
        ),
        (
            &["queue", "create", "n", "--rotation-period", "0s"],
            2,
            "greater than zero",
        ),
        (
            &["queue", "create", "n", "--ticker-idle-period", ""],
            2,
            "--ticker-idle-period",
        ),
        (
            &["queue", "create", "n", "--ticker-max-count", "0"],
            2,
            "--ticker-max-count",
        ),
        (
            &["queue", "create", "n", "--ticker-max-count", "99999999999"],
            2,
            "--ticker-max-count",
        ),
        (
            &["queue", "config", "q", "ticker_max_lag=abc"],
            2,
            "ticker_max_lag",
        ),
        (&["queue", "config", "q", "no_such_key=1"], 2, "no_such_key"),
        (
            &["queue", "config", "q", "ticker_max_lag=9999999999999999s"],
            2,
            "ticker_max_lag: duration \"9999999999999999s\" is out of range",
        ),
        (
            &["queue", "config", "q", "rotation_period=36501days"],
            2,
            "at most 100 years",
        ),
        (
            &[
                "queue",
                "create",
                "n",
                "--ticker-idle-period",
                "9999999999999999s",
            ],
            2,
            "out of range",
        ),
        (
            &["queue", "config", "q", "ticker_paused=maybe"],
            2,
            "ticker_paused",
        ),
        (
            &["queue", "config", "q", "per_tx_limit=-1"],
            2,
            "per_tx_limit",
        ),
        (&["queue", "config", "q", "novalue"], 2, "KEY=VALUE"),
        (&["status", "--watch", "abc"], 2, "invalid duration"),
        (
            &["--connect-timeout", "abc", "queue", "list"],
            2,
            "invalid duration",
        ),
        (
            &["--connect-timeout", "0s", "queue", "list"],
            2,
            "greater than zero",
        ),
        (&["tail", "q", "c", "--max-events", "0"], 2, "--max-events"),
        (&["tail", "q", "c", "--max-events", "-3"], 2, "'-3'"),
        (
            &["tail", "q", "c", "--poll-interval", "soon"],
            2,
            "invalid duration",
        ),
        (
            &["consumer", "register", "q", "d", "--at-tick", "-1"],
            2,
            "'-1'",
        ),
        (
            &["consumer", "register", "q", "d", "--at-tick", "x"],
            2,
            "--at-tick",
        ),
        (&["send", "q", "--type", "t"], 2, "--data"),
        (
            &["send", "q", "--type", "t", "--data", "d", "--file", "f"],
            2,
            "--file",
        ),
        (&["queue", "frobnicate"], 2, "frobnicate"),
        (
            &["send", "nosuchqueue", "--type", "t", "--data", "d"],
            1,
            "nosuchqueue",
        ),
        (
            &["consumer", "register", "nosuchqueue", "c"],
            1,
            "nosuchqueue",
        ),
        (&["queue", "drop", "q"], 1, "still has 1 consumer"),
        (
            &["consumer", "register", "q", "e", "--at-tick", "999999"],
            1,
            "999999",
        ),
    ];
    for (args, code, msg) in cases {
        let before = snapshot(pool).await;
        let o = pgq(&db, args);
        let what = format!("pgq {args:?}");
        assert_eq!(o.status.code(), Some(*code), "{}", describe(&what, &o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{}", describe(&what, &o));
        assert!(!err.contains("panicked"), "{}", describe(&what, &o));
        assert_eq!(snapshot(pool).await, before, "{what}: database changed");
    }
}

/// Durations a queue setting cannot hold (pgq adds them to timestamps) are refused by the library
/// with a message that says so, not a server error; nothing changes.
#[tokio::test]
async fn out_of_range_queue_durations_are_refused_by_the_library() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = QueueName::new("q").unwrap();
    pgq_core::create_queue(pool, &q).await.unwrap();
    let huge = std::time::Duration::from_secs(9_999_999_999_999_999);
    for config in [
        pgq_core::QueueConfig {
            ticker_max_lag: Some(huge),
            ..Default::default()
        },
        pgq_core::QueueConfig {
            ticker_max_count: Some(7),
            rotation_period: Some(pgq_core::QueueConfig::MAX_DURATION * 2),
            ..Default::default()
        },
    ] {
        let before = snapshot(pool).await;
        let mut conn = pool.acquire().await.unwrap();
        let e = pgq_core::set_queue_config(&mut conn, &q, &config)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), pgq_core::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert_eq!(
            snapshot(pool).await,
            before,
            "{config:?} changed the database"
        );
    }
    // The limit itself is accepted.
    let mut conn = pool.acquire().await.unwrap();
    pgq_core::set_queue_config(
        &mut conn,
        &q,
        &pgq_core::QueueConfig {
            rotation_period: Some(pgq_core::QueueConfig::MAX_DURATION),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}
