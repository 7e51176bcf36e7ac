//! The ticker under hostile or careless conditions: a flood of slow HTTP clients with few file
//! descriptors, and SIGTERM while its statements wait on a lock.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pgq_testkit::TestDb;

use crate::util::{
    TICKER, TickerOptions, TickerProc, busy_queue, eventually, http_get, q, tick_count,
    ticks_beyond,
};

/// Slow clients: keeps up to `clients` connections open to `addr`, each sending one byte of a
/// request head now and then and never finishing it; reconnects the ones the server closed.
struct Flood {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(addr: SocketAddr, clients: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (s, o, r) = (stop.clone(), open.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..clients).map(|_| None).collect();
            while !s.load(Ordering::Relaxed) {
                // Connect until one attempt fails (the listen backlog is full: a connect then
                // waits for its timeout), so a round stays short.
                let mut full = false;
                for slot in &mut conns {
                    if let Some(c) = slot {
                        // One more byte of a request head that never ends.
                        if c.write_all(b"G").is_err() {
                            *slot = None;
                        }
                    } else if !full {
                        *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok();
                        full = slot.is_none();
                    }
                }
                o.store(conns.iter().flatten().count(), Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Flood {
            stop,
            open,
            rounds,
            thread: Some(thread),
        }
    }

    /// Connections open after the last round.
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Rounds done (each writes to every open connection and opens new ones).
    fn rounds(&self) -> usize {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Close every connection.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Log lines about the HTTP server.
fn http_lines(t: &TickerProc) -> usize {
    t.lines().iter().filter(|l| l.contains("http")).count()
}

#[tokio::test]
async fn slow_http_clients_with_few_fds_neither_stop_ticking_nor_flood_the_log() {
    let db = TestDb::new().await;
    let pool = db.pool();
    pgq_core::create_queue(pool, &q("flood")).await.unwrap();
    sqlx::query("select pgq.set_queue_config('flood', 'ticker_max_lag', '0')")
        .execute(pool)
        .await
        .unwrap();
    // A period of an hour: after the first round only the fast path ticks the lag-0 queue.
    let t = TickerProc::start(
        TICKER,
        &["--db", &db.url(), "--ticker-period", "1h"],
        &TickerOptions {
            http: true,
            nofile: Some(64),
            ..TickerOptions::default()
        },
    );
    let port = t.http_port().unwrap();
    eventually("the ticker to tick and answer /health", || async {
        (t.db_state(db.name()).as_deref() == Some("active")).then_some(())
    })
    .await;

    // Many more slow clients than the process has file descriptors (64).
    let mut flood = Flood::start(SocketAddr::from(([127, 0, 0, 1], port)), 300);
    // The server takes at most its listen backlog (128) beyond what it accepts.
    eventually("over 100 slow clients connected", || async {
        (flood.rounds() >= 3 && flood.open() > 100).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = t.lines_written();
    assert!(
        total < 1000,
        "the log exploded under the flood: {total} lines; http lines: {}",
        http_lines(&t)
    );

    // The ticker must reconnect while the flood goes on: end its sessions.
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity \
          where datname = current_database() and application_name = 'pgq-ticker'",
    )
    .execute(pool)
    .await
    .unwrap();
    for i in 0..3 {
        let n = tick_count(pool, "flood").await;
        pgq_core::insert_event(pool, &q("flood"), "t", &format!("e{i}"))
            .await
            .unwrap();
        ticks_beyond(pool, "flood", n).await;
    }
    assert!(flood.open() > 100, "the flood stopped early");

    let during = t.lines_written();
    flood.stop();
    eventually(
        "/health to answer once the slow clients are gone",
        || async { http_get(port, "/health").filter(|b| b.contains("\"ready\":true")) },
    )
    .await;
    let total = t.lines_written();
    assert!(
        total < 1000,
        "the log exploded under the flood: {total} lines ({during} while it lasted)\n{}",
        t.logs()
    );
    // The server keeps within its share of the file descriptors: neither accept nor the
    // database sessions ran out of them.
    assert!(
        !t.logs().contains("Too many open files"),
        "the process ran out of file descriptors\n{}",
        t.logs()
    );
    let http = http_lines(&t);
    assert!(
        http <= 50,
        "accept failures are reported rate-limited: {http} lines\n{}",
        t.logs()
    );
}

#[tokio::test]
async fn accept_failures_back_off_and_are_logged_rarely() {
    let db = TestDb::new().await;
    busy_queue(db.pool(), "few").await;
    // Few file descriptors, and (below) no spare one once the ticker runs: accept fails.
    let t = TickerProc::start(
        TICKER,
        &["--db", &db.url(), "--ticker-period", "100ms"],
        &TickerOptions {
            http: true,
            nofile: Some(16),
            ..TickerOptions::default()
        },
    );
    let port = t.http_port().unwrap();
    eventually("the ticker to tick and answer /health", || async {
        (t.db_state(db.name()).as_deref() == Some("active")).then_some(())
    })
    .await;
    // Whatever the process holds besides (sessions, runtime), one free descriptor number below
    // the limit: the first slow client takes it, and accept fails for the others.
    t.limit_open_files(t.lowest_free_descriptor() + 1);
    let mut flood = Flood::start(SocketAddr::from(([127, 0, 0, 1], port)), 50);
    eventually("accept to fail", || async {
        t.logs().contains("http accept failed").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = t
        .lines()
        .iter()
        .filter(|l| l.contains("http accept failed"))
        .count();
    assert_eq!(
        failures,
        1,
        "the repeated warning is rate-limited\n{}",
        t.logs()
    );
    let total = t.lines_written();
    assert!(total < 1000, "the log exploded: {total} lines");
    flood.stop();
    eventually(
        "/health to answer once the slow clients are gone",
        || async { http_get(port, "/health") },
    )
    .await;
    let n = tick_count(db.pool(), "few").await;
    ticks_beyond(db.pool(), "few", n + 2).await;
}

#[tokio::test]
async fn a_request_that_dribbles_in_is_cut_off() {
    let db = TestDb::new().await;
    let t = TickerProc::spawn_http(TICKER, &["--db", &db.url()]);
    let port = t.http_port().unwrap();
    eventually("/health to answer", || async { http_get(port, "/health") }).await;
    // One byte of the request head a second: never a complete request, never 5 s without data.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let start = std::time::Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 64];
        while start.elapsed() < Duration::from_secs(60) {
            if c.write_all(b"G").is_err() {
                return true;
            }
            match std::io::Read::read(&mut c, &mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        closed,
        "the server kept a dribbling request open for a minute"
    );
    assert!(http_get(port, "/health").is_some());
}

/// Backend pids of the ticker's sessions of the current database that wait on a lock.
async fn waiting_ticker_sessions(pool: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity where datname = current_database() \
            and application_name = 'pgq-ticker' and wait_event_type = 'Lock' order by pid",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn sigterm_ends_statements_waiting_on_a_lock_and_nothing_commits_after() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "held").await;
    sqlx::query("select pgq.set_queue_config('held', 'rotation_period', '0')")
        .execute(pool)
        .await
        .unwrap();
    let cur: i32 =
        sqlx::query_scalar("select queue_cur_table from pgq.queue where queue_name = 'held'")
            .fetch_one(pool)
            .await
            .unwrap();
    // A lock the ticker's statements need: new ticks go into pgq.tick, and rotation step 1
    // (after truncating the next event table and switching to it) deletes old ticks.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table pgq.tick in exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let ticks = tick_count(pool, "held").await;

    let args = [
        "--db",
        &db.url(),
        "--ticker-period",
        "100ms",
        "--maint-period",
        "100ms",
    ];
    let mut t = TickerProc::spawn(TICKER, &args);
    // Both sessions (ticking and maintenance) wait on the test's locks.
    let waiting = eventually("both ticker sessions to wait on a lock", || async {
        Some(waiting_ticker_sessions(pool).await).filter(|p| p.len() == 2)
    })
    .await;
    t.signal("TERM");
    let code = t.wait_exit();

    // Right when the process has exited: its sessions are gone and the ticker lock is free.
    let left: Vec<i32> =
        sqlx::query_scalar("select pid from pg_stat_activity where pid = any($1) order by pid")
            .bind(&waiting)
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(
        left.is_empty(),
        "sessions {left:?} of the stopped ticker are still there\n{}",
        t.logs()
    );
    let holder = pgq_core::ticker_lock_holder(pool, pgq_core::TICKER_LOCK_KEY)
        .await
        .unwrap();
    assert_eq!(holder, None, "the ticker lock is still held");
    assert_eq!(code, Some(0), "{}", t.logs());
    assert!(t.logs().contains("stopped"), "{}", t.logs());

    // Release the locks: nothing of the stopped ticker may commit now.
    blocker.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tick_count(pool, "held").await,
        ticks,
        "a tick committed after the stop"
    );
    let now: i32 =
        sqlx::query_scalar("select queue_cur_table from pgq.queue where queue_name = 'held'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(now, cur, "a rotation committed after the stop");

    // A new ticker takes over at once (no orphaned session holds the lock).
    let t2 = TickerProc::spawn_http(TICKER, &args);
    eventually("the new ticker to tick", || async {
        (t2.db_state(db.name()).as_deref() == Some("active")).then_some(())
    })
    .await;
    assert!(
        !t2.logs().contains("standing by"),
        "the new ticker had to stand by\n{}",
        t2.logs()
    );
    ticks_beyond(pool, "held", ticks).await;
}
