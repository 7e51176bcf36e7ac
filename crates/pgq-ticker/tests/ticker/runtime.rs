//! What a configuration says, at run time (not only `--check-config`): `--discover`,
//! `servers = [...]` and `databases = [...]` in a TOML file, and SIGHUP removing a database or
//! changing a period.

use std::time::{Duration, Instant};

use pgq_testkit::{Cluster, TestDb};
use sqlx::{Connection as _, PgPool};

use crate::util::{
    TICKER, TickerProc, busy_queue, eventually, http_get, q, tick_count, ticks_beyond,
};

/// Run `sql` in the `postgres` database of `cluster`.
async fn admin(cluster: &Cluster, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.unwrap();
}

/// The seconds between consecutive ticks of `queue` with an id above `after`.
async fn tick_gaps(pool: &PgPool, queue: &str, after: i64) -> Vec<f64> {
    sqlx::query_scalar(
        "select extract(epoch from t.tick_time - lag(t.tick_time) over (order by t.tick_id))::float8 \
           from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1 and t.tick_id > $2 \
          order by t.tick_id offset 1",
    )
    .bind(queue)
    .bind(after)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The newest tick id of `queue`.
async fn last_tick(pool: &PgPool, queue: &str) -> i64 {
    sqlx::query_scalar(
        "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1",
    )
    .bind(queue)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Wait until `queue` has `n` more ticks after tick `after`; the gaps between them.
async fn gaps_of_next_ticks(pool: &PgPool, queue: &str, after: i64, n: usize) -> Vec<f64> {
    eventually(&format!("{n} more ticks of {queue}"), || async {
        let gaps = tick_gaps(pool, queue, after).await;
        (gaps.len() + 1 >= n).then_some(gaps)
    })
    .await
}

/// Sessions of the ticker in database `db` (seen from `pool`, a session on another database of
/// the same cluster).
async fn ticker_sessions(pool: &PgPool, db: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = $1 and application_name = 'pgq-ticker'",
    )
    .bind(db)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Whether the ticker advisory lock is held in database `db`.
async fn lock_held_in(pool: &PgPool, db: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from pg_locks where locktype = 'advisory' and granted \
           and database = (select oid from pg_database where datname = $1) \
           and classid::int8 = ($2::int8 >> 32) & 4294967295 and objid::int8 = $2::int8 & 4294967295)",
    )
    .bind(db)
    .bind(pgq_core::TICKER_LOCK_KEY)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `--discover`: a database created with pgq after the start is ticked after the next check
/// period; a database without pgq is left alone (no lock, no schema, no warning: `no_pgq`).
#[tokio::test]
async fn discover_ticks_a_database_created_later_and_leaves_one_without_pgq_alone() {
    let cluster = Cluster::start_private().expect("private cluster");
    let early = TestDb::new_on(&cluster).await;
    busy_queue(early.pool(), "d").await;
    admin(&cluster, "create database bare template template0").await;
    let bare = sqlx::PgPool::connect(&cluster.url("bare")).await.unwrap();
    let t = TickerProc::spawn_http(
        TICKER,
        &[
            "--discover",
            "--db",
            &cluster.url("postgres"),
            "--ticker-period",
            "100ms",
            "--check-period",
            "1s",
        ],
    );
    let n = tick_count(early.pool(), "d").await;
    ticks_beyond(early.pool(), "d", n + 2).await;

    // Created (pgq installed, a queue) after the ticker started.
    let late = TestDb::new_on(&cluster).await;
    busy_queue(late.pool(), "d").await;
    let n = tick_count(late.pool(), "d").await;
    ticks_beyond(late.pool(), "d", n + 2).await;
    assert_eq!(t.db_state(late.name()).as_deref(), Some("active"));

    // The database without pgq: seen, and left alone, over several check periods.
    eventually("the database without pgq to be reported no_pgq", || async {
        (t.db_state("bare")? == "no_pgq").then_some(())
    })
    .await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            t.db_state("bare").as_deref(),
            Some("no_pgq"),
            "{}",
            t.logs()
        );
        assert!(
            !lock_held_in(&bare, "bare").await,
            "the ticker lock is held in the database without pgq\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let schemas: i64 =
        sqlx::query_scalar("select count(*) from pg_namespace where nspname in ('pgq', 'pgq_rs')")
            .fetch_one(&bare)
            .await
            .unwrap();
    assert_eq!(
        schemas, 0,
        "something was installed in the database without pgq"
    );
    let complaints: Vec<String> = t
        .lines()
        .into_iter()
        .filter(|l| l.contains("/bare") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert!(
        complaints.is_empty(),
        "a discovered database without pgq is normal, not a warning: {complaints:#?}"
    );
    bare.close().await;
}

/// `servers = [...]` in a TOML file: one server with a database list, one discovered through
/// its initial database; both are ticked.
#[tokio::test]
async fn every_server_of_a_toml_file_is_ticked() {
    let (c1, c2) = (
        Cluster::start_private().expect("private cluster"),
        Cluster::start_private().expect("private cluster"),
    );
    let (a, b) = (TestDb::new_on(&c1).await, TestDb::new_on(&c2).await);
    busy_queue(a.pool(), "s").await;
    busy_queue(b.pool(), "s").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "ticker.toml",
        &format!(
            "ticker_period = \"100ms\"\ncheck_period = \"1s\"\nservers = [\n  \
             {{ base_connstr = \"host=127.0.0.1 port={} user=postgres\", database_list = [\"{}\"] }},\n  \
             {{ base_connstr = \"host=127.0.0.1 port={} user=postgres\", initial_database = \"postgres\" }},\n]\n",
            c1.port(),
            a.name(),
            c2.port(),
        ),
    );
    let t = TickerProc::spawn_http(TICKER, &[&config]);
    for db in [&a, &b] {
        let n = tick_count(db.pool(), "s").await;
        ticks_beyond(db.pool(), "s", n + 2).await;
    }
    let health = t.health().expect("/health");
    let states: Vec<(String, String)> = health["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["database"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (port, name) in [(c1.port(), a.name()), (c2.port(), b.name())] {
        let label = format!("127.0.0.1:{port}/{name}");
        assert!(
            states.iter().any(|(l, s)| *l == label && s == "active"),
            "{label} is not active: {states:?}"
        );
    }
}

/// A TOML file with `databases = [...]` and a period: the listed databases are ticked at that
/// period (2.5 s, not the default 1 s), a database it does not list is not.
#[tokio::test]
async fn a_toml_file_ticks_what_it_lists_at_its_period() {
    let (a, b, other) = (
        TestDb::new().await,
        TestDb::new().await,
        TestDb::new().await,
    );
    for db in [&a, &b, &other] {
        busy_queue(db.pool(), "t").await;
    }
    let other_before = tick_count(other.pool(), "t").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "ticker.toml",
        &format!(
            "databases = [\"{}\", \"{}\"]\nticker_period = 2.5\n",
            a.url(),
            b.url()
        ),
    );
    let first = last_tick(a.pool(), "t").await;
    let t = TickerProc::spawn(TICKER, &[&config]);
    let n = tick_count(b.pool(), "t").await;
    ticks_beyond(b.pool(), "t", n + 1).await;
    // Four ticks by the ticker: three gaps, none near the default period.
    let gaps = gaps_of_next_ticks(a.pool(), "t", first, 4).await;
    assert!(
        gaps.iter().all(|g| *g >= 1.5),
        "ticks closer than the configured 2.5 s: {gaps:?}\n{}",
        t.logs()
    );
    assert_eq!(
        tick_count(other.pool(), "t").await,
        other_before,
        "a database the file does not list was ticked"
    );
}

/// SIGHUP with a database removed from the file: its worker stops (its sessions end) and it is
/// not ticked any more, while the remaining one is.
#[tokio::test]
async fn sighup_removing_a_database_stops_its_ticks() {
    let (a, b) = (TestDb::new().await, TestDb::new().await);
    busy_queue(a.pool(), "h").await;
    busy_queue(b.pool(), "h").await;
    let dir = tempfile::tempdir().unwrap();
    let both = format!(
        "databases = [\"{}\", \"{}\"]\nticker_period = \"100ms\"\n",
        a.url(),
        b.url()
    );
    let config = write_config(&dir, "ticker.toml", &both);
    let t = TickerProc::spawn(TICKER, &[&config]);
    for db in [&a, &b] {
        let n = tick_count(db.pool(), "h").await;
        ticks_beyond(db.pool(), "h", n + 2).await;
    }
    write_config(
        &dir,
        "ticker.toml",
        &format!("databases = [\"{}\"]\nticker_period = \"100ms\"\n", a.url()),
    );
    t.signal("HUP");
    let removed = format!("/{}", b.name());
    eventually("the log line saying the database was removed", || async {
        t.lines()
            .iter()
            .any(|l| l.contains("unregister database") && l.contains(&removed))
            .then_some(())
    })
    .await;
    eventually("the removed database's sessions to end", || async {
        (ticker_sessions(a.pool(), b.name()).await == 0).then_some(())
    })
    .await;
    let stopped_at = tick_count(b.pool(), "h").await;
    let a_now = tick_count(a.pool(), "h").await;
    // 2 s: twenty rounds at the period it had.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tick_count(b.pool(), "h").await,
        stopped_at,
        "the removed database is still ticked\n{}",
        t.logs()
    );
    assert_eq!(ticker_sessions(a.pool(), b.name()).await, 0);
    ticks_beyond(a.pool(), "h", a_now + 2).await;
    assert_eq!(t.db_state(a.name()), None, "no --http");
}

/// SIGHUP with a new `ticker_period` changes it in place: from an hour to 100 ms (ticks come
/// back at once, not an hour later), then to 2.5 s (ticks spread out).
#[tokio::test]
async fn sighup_changes_the_ticker_period_in_place() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "p").await;
    let dir = tempfile::tempdir().unwrap();
    let config_with = |period: &str| {
        format!(
            "databases = [\"{}\"]\nticker_period = \"{period}\"\n",
            db.url()
        )
    };
    let config = write_config(&dir, "ticker.toml", &config_with("1h"));
    let t = TickerProc::spawn(TICKER, &[&config]);
    // The first round ticks at once; the next one would come an hour later.
    let n = tick_count(pool, "p").await;
    let n = ticks_beyond(pool, "p", n).await;
    eventually("the ticker to tick", || async {
        t.logs().contains("ticking").then_some(())
    })
    .await;

    write_config(&dir, "ticker.toml", &config_with("100ms"));
    t.signal("HUP");
    eventually("the reload to be logged", || async {
        t.logs().contains("configuration reloaded").then_some(())
    })
    .await;
    ticks_beyond(pool, "p", n + 5).await;

    let reloads = |t: &TickerProc| {
        t.lines()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    };
    write_config(&dir, "ticker.toml", &config_with("2500ms"));
    t.signal("HUP");
    eventually("the second reload to be logged", || async {
        (reloads(&t) == 2).then_some(())
    })
    .await;
    // The round running at the reload may end close to the next one: count from the one after.
    let after = last_tick(pool, "p").await;
    let n = tick_count(pool, "p").await;
    ticks_beyond(pool, "p", n).await;
    let from = last_tick(pool, "p").await.max(after);
    let gaps = gaps_of_next_ticks(pool, "p", from, 4).await;
    assert!(
        gaps.iter().all(|g| *g >= 1.5),
        "ticks closer than the reloaded 2.5 s: {gaps:?}\n{}",
        t.logs()
    );
}

/// `pgq_queue_new_events` of `queue` in `/metrics`.
fn new_events_gauge(t: &TickerProc, queue: &str) -> Option<f64> {
    let body = http_get(t.http_port()?, "/metrics")?;
    let label = format!("queue=\"{queue}\"");
    body.lines()
        .find(|l| l.starts_with("pgq_queue_new_events{") && l.contains(&label))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// SIGHUP with a new `stats_period` changes it in place: from an hour (no stats line, metrics
/// refreshed once at the start) to 1 s (stats lines and fresh metrics at once, not an hour
/// later).
#[tokio::test]
async fn sighup_changes_the_stats_period_in_place() {
    let db = TestDb::new().await;
    let pool = db.pool();
    busy_queue(pool, "st").await;
    // Not ticked while its events are few: its new-event count grows.
    pgq_core::create_queue(pool, &q("quiet")).await.unwrap();
    sqlx::query(
        "select pgq.set_queue_config('quiet', 'ticker_max_lag', '1 hour'), \
                pgq.set_queue_config('quiet', 'ticker_idle_period', '1 hour')",
    )
    .execute(pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_with = |period: &str| {
        format!(
            "databases = [\"{}\"]\nticker_period = \"100ms\"\nstats_period = \"{period}\"\n",
            db.url()
        )
    };
    let config = write_config(&dir, "ticker.toml", &config_with("1h"));
    let t = TickerProc::spawn_http(TICKER, &[&config]);
    let stats_lines = |t: &TickerProc| t.lines().iter().filter(|l| l.contains("{ticks: ")).count();
    eventually("the metrics of the first round", || async {
        (new_events_gauge(&t, "quiet")? == 0.0).then_some(())
    })
    .await;
    for i in 0..3 {
        pgq_core::insert_event(pool, &q("quiet"), "t", &i.to_string())
            .await
            .unwrap();
    }
    let n = tick_count(pool, "st").await;
    ticks_beyond(pool, "st", n + 2).await;
    assert_eq!(stats_lines(&t), 0, "{}", t.logs());
    assert_eq!(new_events_gauge(&t, "quiet"), Some(0.0), "refreshed early");

    write_config(&dir, "ticker.toml", &config_with("1s"));
    t.signal("HUP");
    eventually("stats lines at the reloaded period", || async {
        (stats_lines(&t) >= 2).then_some(())
    })
    .await;
    eventually("the metrics refreshed at the reloaded period", || async {
        // pgq counts new events from the event id sequence: roughly, not exactly, 3.
        (new_events_gauge(&t, "quiet")? > 0.0).then_some(())
    })
    .await;
}
