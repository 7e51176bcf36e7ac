//! Interop with the real peers on one database: python3-pgq's Consumer, CoopConsumer and producer,
//! and pgqd as the ticker. When a peer is not installed the test fails under
//! `PGQ_REQUIRE_PEERS=1` (set by `scripts/test`, which installs the peers first) or `CI=true`;
//! otherwise it writes a SKIPPED banner straight to the terminal (past the test harness's output
//! capture) and returns, so a plain `cargo test` on a machine without the peers still runs.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgq_core::sqlx::PgPool;
use pgq_core::{BatchTuning, Event, NewEvent, QueueName};
use pgq_testkit::{TestDb, c, peer_available, q};

const PY: &str = "/usr/bin/python3";

/// How long a peer process may run before the test kills it and fails (a hang guard for a busy
/// machine, not a timing assertion; `py_pgq.py` stops itself a little later).
const PEER_DEADLINE: Duration = Duration::from_secs(90);

fn script() -> String {
    format!("{}/tests/interop/py_pgq.py", env!("CARGO_MANIFEST_DIR"))
}

/// Run `cmd` (standard output piped) to its end within [`PEER_DEADLINE`]; its standard output.
/// A peer that hangs is killed and fails the test instead of hanging the suite.
fn run_with_deadline(what: &str, mut child: Child) -> String {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > PEER_DEADLINE {
            child.kill().expect("kill the hung peer");
            child.wait().expect("reap the hung peer");
            panic!("{what} did not finish within {PEER_DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader
        .join()
        .expect("the output reader")
        .expect("the peer's output is UTF-8");
    assert!(status.success(), "{what} failed: {status:?}\n{out}");
    out
}

fn python_pgq() -> bool {
    peer_available(
        "python3-pgq",
        Command::new(PY).args(["-c", "import pgq, skytools, psycopg2"]),
    )
}

fn pgqd() -> bool {
    peer_available("pgqd", Command::new("sh").args(["-c", "command -v pgqd"]))
}

async fn tick(pool: &PgPool, queue: &QueueName) {
    pgq_core::tick_now(&mut pool.acquire().await.unwrap(), queue)
        .await
        .unwrap();
}

/// Run the Python consumer until it printed `count` events; returns them.
fn py_consume(
    db: &TestDb,
    queue: &str,
    consumer: &str,
    count: usize,
    member: Option<&str>,
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(PY);
    cmd.arg(script())
        .args(["consume", &db.url(), queue, consumer, &count.to_string()]);
    if let Some(m) = member {
        cmd.arg(m);
    }
    run_reader("python3-pgq consumer", &mut cmd)
}

/// Run a Python reader to its end (within [`PEER_DEADLINE`]); the events it printed, one JSON
/// object a line.
fn run_reader(what: &str, cmd: &mut Command) -> Vec<serde_json::Value> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect(what);
    run_with_deadline(what, child)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pgqueue() -> bool {
    peer_available(
        "pgqueue (PyPI)",
        Command::new(PY)
            .env("PYTHONPATH", peers_dir())
            .args(["-c", "import pgqueue"]),
    )
}

fn peers_dir() -> String {
    format!("{}/target/py-peers", env!("CARGO_MANIFEST_DIR"))
}

/// Run pgqueue's Consumer until it printed `count` events; returns them.
fn pgqueue_consume(
    db: &TestDb,
    queue: &str,
    consumer: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(PY);
    cmd.env("PYTHONPATH", peers_dir()).arg(script()).args([
        "pgqueue-consume",
        &db.url(),
        queue,
        consumer,
        &count.to_string(),
    ]);
    run_reader("pgqueue consumer", &mut cmd)
}

fn field<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

#[tokio::test]
async fn our_events_read_identically_by_the_python_consumer() {
    if !python_pgq() || !pgqueue() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("to_python");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("py"))
        .await
        .unwrap();
    let when = chrono::DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456Z")
        .unwrap()
        .to_utc();
    let sent = vec![
        NewEvent::new("order.created", r#"{"id":1,"s":"tab\there"}"#)
            .extra1("orders")
            .extra4("x4"),
        NewEvent::new("ünï", "line\nbreak \\ back")
            .extra2("e2")
            .extra3("e3"),
        NewEvent::new("timed", "t").time(when),
    ];
    pgq_core::register_consumer(pool, &queue, &c("pgqueue"))
        .await
        .unwrap();
    let producer = pgq_producer::Producer::new(queue.clone());
    let mut tx = pool.begin().await.unwrap();
    producer.send_batch(&mut *tx, &sent[..2]).await.unwrap();
    producer
        .copy_iter(&mut tx, [sent[2].clone()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tick(pool, &queue).await;

    // python3-pgq's Consumer, then pgqueue's Consumer (which reports "no retry" as 0).
    let readers = [
        (
            "python3-pgq",
            py_consume(&db, "to_python", "py", 3, None),
            serde_json::Value::Null,
        ),
        (
            "pgqueue",
            pgqueue_consume(&db, "to_python", "pgqueue", 3),
            serde_json::json!(0),
        ),
    ];
    for (peer, mut got, no_retry) in readers {
        got.sort_by_key(|v| v["ev_id"].as_i64());
        assert_eq!(got.len(), 3, "{peer}");
        for (v, s) in got.iter().zip(&sent) {
            assert_eq!(field(v, "ev_type"), Some(s.ev_type.as_str()), "{peer}");
            assert_eq!(field(v, "ev_data"), Some(s.ev_data.as_str()), "{peer}");
            assert_eq!(field(v, "ev_extra1"), s.extra1.as_deref(), "{peer}");
            assert_eq!(field(v, "ev_extra2"), s.extra2.as_deref(), "{peer}");
            assert_eq!(field(v, "ev_extra3"), s.extra3.as_deref(), "{peer}");
            assert_eq!(field(v, "ev_extra4"), s.extra4.as_deref(), "{peer}");
            assert_eq!(v["ev_retry"], no_retry, "{peer}");
        }
        let t = chrono::DateTime::parse_from_rfc3339(field(&got[2], "ev_time").unwrap()).unwrap();
        assert_eq!(t.to_utc(), when, "{peer}: event time as given");
    }
}

/// A retried event reaches the Python consumer with its retry count.
#[tokio::test]
async fn retried_events_keep_their_retry_count_for_the_python_consumer() {
    if !python_pgq() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("retry_py");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("py"))
        .await
        .unwrap();
    pgq_producer::Producer::new(queue.clone())
        .send(pool, &NewEvent::new("r", "again"))
        .await
        .unwrap();
    tick(pool, &queue).await;
    let b = pgq_core::next_batch(pool, &queue, &c("py"))
        .await
        .unwrap()
        .unwrap();
    let ev = pgq_core::get_batch_events(pool, b).await.unwrap().remove(0);
    pgq_core::event_retry(pool, b, ev.id(), Duration::ZERO)
        .await
        .unwrap();
    pgq_core::finish_batch(pool, b).await.unwrap();
    pgq_core::maint_retry_events_all(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    tick(pool, &queue).await;
    let got = py_consume(&db, "retry_py", "py", 1, None);
    assert_eq!(got[0]["ev_retry"], serde_json::json!(1));
    assert_eq!(got[0]["ev_id"], serde_json::json!(ev.ev_id));
}

#[tokio::test]
async fn python_events_read_identically_by_our_consumer() {
    if !python_pgq() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("from_python");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("rust"))
        .await
        .unwrap();
    let producer = Command::new(PY)
        .arg(script())
        .args(["produce", &db.url(), "from_python", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the python3-pgq producer");
    run_with_deadline("python3-pgq producer", producer);
    tick(pool, &queue).await;
    // Our consumer crate reads them.
    let consumer = pgq_consumer::Consumer::builder(pool.clone(), queue.clone(), c("rust"))
        .wakeups(false)
        .build()
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = consumer
        .next_batch(&mut conn)
        .await
        .unwrap()
        .expect("batch");
    let mut evs: Vec<Event> = Vec::new();
    while let Some(e) = batch.next_event().await.unwrap() {
        evs.push(e);
    }
    batch.finish().await.unwrap();
    evs.sort_by_key(|e| e.ev_id);
    assert_eq!(evs.len(), 5);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.ev_type.as_deref(), Some("py.type"));
        assert_eq!(
            e.ev_data.as_deref(),
            Some(format!("py data {i} \t tab \\ back ünï").as_str())
        );
        assert_eq!(e.ev_extra1.as_deref(), Some(format!("py_e1_{i}").as_str()));
        assert_eq!(
            (
                e.ev_extra2.as_deref(),
                e.ev_extra3.as_deref(),
                e.ev_extra4.as_deref()
            ),
            (None, Some("py_e3"), None)
        );
    }
}

/// A running pgqd (logging into its config directory), stopped on drop.
struct Pgqd(Child, tempfile::TempDir);

impl Pgqd {
    /// What pgqd logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.1.path().join("pgqd.log"))
            .unwrap_or_else(|e| format!("(no pgqd log: {e})"))
    }
}

impl Drop for Pgqd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_pgqd(db: &TestDb) -> Pgqd {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("pgqd.ini");
    std::fs::write(
        &ini,
        format!(
            "[pgqd]\nbase_connstr = host=127.0.0.1 port={} user=postgres\ninitial_database = {db}\n\
             database_list = {db}\nlogfile = {log}\npidfile = {pid}\nticker_period = 0.05\nretry_period = 1\n",
            db.cluster().port(),
            db = db.name(),
            log = dir.path().join("pgqd.log").display(),
            pid = dir.path().join("pgqd.pid").display(),
        ),
    )
    .unwrap();
    let child = Command::new("pgqd")
        .arg(&ini)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pgqd");
    Pgqd(child, dir)
}

#[tokio::test]
async fn pgqd_ticks_for_our_consumers() {
    if !pgqd() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("by_pgqd");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("rust"))
        .await
        .unwrap();
    let cfg = pgq_core::QueueConfig {
        ticker_max_lag: Some(Duration::from_millis(10)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &queue, &cfg)
        .await
        .unwrap();
    let mut pgqd = start_pgqd(&db);
    pgq_core::insert_events(pool, &queue, &vec![NewEvent::new("t", "via pgqd"); 10])
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < 10 {
        assert!(
            Instant::now() < deadline,
            "pgqd did not tick within 30 s (got {got} events)\n{}",
            pgqd.log()
        );
        match pgq_core::next_batch_custom(pool, &queue, &c("rust"), BatchTuning::default())
            .await
            .unwrap()
        {
            Some(b) => {
                got += pgq_core::get_batch_events(pool, b.batch_id)
                    .await
                    .unwrap()
                    .len();
                pgq_core::finish_batch(pool, b.batch_id).await.unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(got, 10);
    assert!(
        pgqd.0.try_wait().unwrap().is_none(),
        "pgqd still running\n{}",
        pgqd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_group_mixes_python_and_rust_members() {
    if !python_pgq() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("mixed");
    pgq_core::create_queue(pool, &queue).await.unwrap();

    // A Rust member (our CoopConsumer, slow enough that the Python member gets work too) ...
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let rust =
        pgq_consumer::CoopConsumer::coop_builder(pool.clone(), queue.clone(), c("grp"), c("rust1"))
            .poll_interval(Duration::from_millis(50))
            .build()
            .unwrap();
    let stop = pgq_consumer::CancellationToken::new();
    let rust_task = {
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let handler = pgq_consumer::handler_fn(move |ev: Event| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    seen.lock().unwrap().push(ev.ev_data.unwrap_or_default());
                    Ok::<_, pgq_consumer::HandlerError>(())
                }
            });
            rust.run(handler, stop).await
        })
    };
    // ... and a python3-pgq CoopConsumer process in the same group.
    let py = Command::new(PY)
        .arg(script())
        .args(["consume", &db.url(), "mixed", "grp", "0", "py1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait until both members are registered, then produce 12 batches of 5 events.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgq_core::get_consumer_info_queue(pool, &queue)
        .await
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "members did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = pgq_producer::Producer::new(queue.clone());
    let mut sent = Vec::new();
    for round in 0..12 {
        let evs: Vec<_> = (0..5)
            .map(|i| NewEvent::new("t", format!("e{round}_{i}")))
            .collect();
        sent.extend(evs.iter().map(|e| e.ev_data.clone()));
        producer.send_batch(pool, &evs).await.unwrap();
        tick(pool, &queue).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::task::spawn_blocking(move || run_with_deadline("python3-pgq member", py))
        .await
        .unwrap();
    let py_seen: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ev_data"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() + py_seen.len() < sent.len() {
        assert!(Instant::now() < deadline, "not every event was handled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    rust_task.await.unwrap().unwrap();
    let rust_seen = seen.lock().unwrap().clone();
    assert!(
        !rust_seen.is_empty() && !py_seen.is_empty(),
        "both members worked: rust {} python {}",
        rust_seen.len(),
        py_seen.len()
    );
    let mut all: Vec<String> = rust_seen.into_iter().chain(py_seen).collect();
    all.sort();
    sent.sort();
    assert_eq!(all, sent, "every event exactly once across the group");
    // The Rust member left the group on its clean shutdown; the Python member stays registered.
    let names: Vec<String> = pgq_core::get_consumer_info_queue(pool, &queue)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.consumer_name)
        .collect();
    assert_eq!(names, vec!["grp", "grp.py1"]);
}

#[tokio::test]
async fn pgq_ticker_ticks_for_the_python_consumer() {
    if !python_pgq() {
        return;
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let queue = q("py_by_ticker");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("py"))
        .await
        .unwrap();
    let cfg = pgq_core::QueueConfig {
        ticker_max_lag: Some(Duration::ZERO),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &queue, &cfg)
        .await
        .unwrap();
    let _ticker = pgq_testkit::Process::ticker(&["--db", &db.url(), "--ticker-period", "100ms"]);
    pgq_producer::Producer::new(queue.clone())
        .send_batch(pool, &vec![NewEvent::new("t", "ticked by pgq-ticker"); 4])
        .await
        .unwrap();
    // No manual tick: the Python consumer only sees the events if pgq-ticker ticks.
    let got = py_consume(&db, "py_by_ticker", "py", 4, None);
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|v| field(v, "ev_data") == Some("ticked by pgq-ticker"))
    );
}
