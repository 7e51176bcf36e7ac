//! Chaos: producers, two tickers and consumers of every kind run as separate processes on a
//! private cluster while faults are injected at random; a checker then proves nothing was lost.
//!
//! - Load: three producer processes (single sends, set-based batches, COPY), each transaction
//!   also inserting its event ids into `produced`, so exactly the committed events count; two
//!   `pgq-ticker` processes (one ticks, the other stands by), each behind its own TCP relay; an
//!   at-least-once consumer (`alo`, records into `seen_alo` on its own connections), an
//!   exactly-once consumer (`eo`, writes `ledger_eo` in the batch's transaction; no unique key,
//!   so a duplicate shows) and a cooperative group `grp` (members `m1`, `m2`, with a dead
//!   interval) recording into `seen_grp`. Every event whose id is a multiple of [`FAILING`]
//!   fails in every handler, always: it must end in the dead letters after `max_retries`.
//! - Faults, one every 0.3–2.5 s: SIGKILL of any process (restarted after 0–4 s, so a killed
//!   member's batch is sometimes taken over), `pg_terminate_backend` of random client sessions,
//!   a PostgreSQL immediate stop and start, a frozen relay (a half-open connection) under one
//!   of the tickers.
//! - The checker, after the faults stop and everything drains: every committed event reached
//!   every consumer at least once (an event in a batch finished without handling it would be
//!   missing: "lost"); the exactly-once ledger holds each event once; each always-failing event
//!   is a dead letter exactly once per consumer and handled nowhere.
//!
//! `PGQ_CHAOS_SECS` sets the length of the fault phase (default 60 s: the whole test stays under
//! 2 minutes); `PGQ_CHAOS_SEED` replays a run's fault sequence (the seed is printed first).
//! Long run: `PGQ_CHAOS_SECS=900 cargo test --test faults chaos -- --nocapture`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgq_consumer::{
    Backoff, BatchSource, CancellationToken, Consumer, ConsumerBuilder, CoopConsumer, Delivery,
    EventContext, Handler, HandlerError, Registration,
};
use pgq_core::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use pgq_core::sqlx::{self, PgPool};
use pgq_core::{DeadLetterFilter, Event, NewEvent, QueueConfig};
use pgq_producer::Producer;
use pgq_testkit::{Cluster, Relay, TestDb};

use crate::support::{Proc, c, child_mode, command, exec, q, spawn_test_child};

/// Events whose id is a multiple of this fail in every handler, every time.
const FAILING: i64 = 97;
/// Retries before a failing event becomes a dead letter.
const MAX_RETRIES: u32 = 2;
/// The consumers (a cooperative group counts as one) and the table each records into.
const CONSUMERS: [(&str, &str); 3] = [
    ("alo", "seen_alo"),
    ("eo", "ledger_eo"),
    ("grp", "seen_grp"),
];
/// How long the consumers may take to catch up once the faults stop.
const DRAIN: Duration = Duration::from_secs(90);
/// The application name of the test's own sessions (never terminated by a fault).
const SELF_APP: &str = "chaos-checker";

/// Every process of the run: `pgq-ticker` twice, else the child mode of this test binary that
/// plays it.
const ROLES: [&str; 9] = [
    "ticker-a", "ticker-b", "single", "batch", "copy", "alo", "eo", "m1", "m2",
];
const PRODUCERS: [&str; 3] = ["single", "batch", "copy"];

// ---------------------------------------------------------------------------------------------
// The child processes.

/// Records each handled event; fails those whose id is a multiple of [`FAILING`].
struct Recorder {
    pool: PgPool,
    /// `seen_alo` / `seen_grp` (at-least-once) or `ledger_eo` (exactly-once).
    table: &'static str,
}

impl Handler for Recorder {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let id: i64 = ev.ev_data.as_deref().unwrap_or_default().parse().unwrap();
        let insert = format!("insert into {} (id, ev_id) values ($1, $2)", self.table);
        if let Some(tx) = ctx.transaction() {
            // Exactly-once: written in the batch's transaction, failing events included; a
            // failing handler's writes must be rolled back.
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .bind(id)
                .bind(ev.ev_id)
                .execute(tx)
                .await?;
        } else if id % FAILING != 0 {
            // At-least-once: recorded on its own connection, retried through session losses so
            // that a fault does not use up an event's retries.
            let mut tries = 0;
            while let Err(e) = sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(id)
                .bind(ev.ev_id)
                .execute(&self.pool)
                .await
            {
                tries += 1;
                if tries > 240 {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        if id % FAILING == 0 {
            return Err(HandlerError::new(format!("chaos: event {id} always fails")));
        }
        Ok(())
    }
}

fn child_pool(url: &str, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url)
        .unwrap()
}

/// Send events in transactions of their own until killed: `single` sends 1–3 events one by one,
/// `batch` 10 set-based, `copy` 25 by COPY; each transaction records its ids in `produced`.
async fn produce(url: &str, kind: &str) {
    let pool = child_pool(url, 1);
    let producer = Producer::new(q("chaos"));
    let (every, size) = match kind {
        "single" => (Duration::from_millis(40), 0),
        "batch" => (Duration::from_millis(100), 10),
        _ => (Duration::from_millis(200), 25),
    };
    loop {
        let n = if size == 0 {
            fastrand::i64(1..=3)
        } else {
            size
        };
        let round = async {
            let mut tx = pool.begin().await?;
            let ids: Vec<i64> =
                sqlx::query_scalar("select nextval('chaos_ids') from generate_series(1, $1)")
                    .bind(n)
                    .fetch_all(&mut *tx)
                    .await?;
            let events: Vec<NewEvent> = ids
                .iter()
                .map(|id| NewEvent::new("chaos", id.to_string()))
                .collect();
            match kind {
                "single" => {
                    for ev in &events {
                        producer.send(&mut *tx, ev).await?;
                    }
                }
                "batch" => drop(producer.send_batch(&mut *tx, &events).await?),
                _ => drop(producer.copy_iter(&mut tx, events).await?),
            }
            sqlx::query("insert into produced (id, kind) select unnest($1::bigint[]), $2")
                .bind(&ids)
                .bind(kind)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, anyhow::Error>(())
        };
        // A failed round (a fault) is simply not in `produced`.
        let _ = round.await;
        tokio::time::sleep(every).await;
    }
}

/// The settings every consumer shares: short retries, quick reconnects.
fn tuned<S: BatchSource>(builder: ConsumerBuilder<S>) -> ConsumerBuilder<S> {
    builder
        .registration(Registration::Existing)
        .max_retries(MAX_RETRIES)
        .retry_backoff(Backoff::constant(Duration::from_millis(200)))
        .fetch_size(50)
        .poll_interval(Duration::from_millis(500))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .database_timeout(Duration::from_secs(10))
}

/// Consume until killed, as consumer `alo`/`eo` or as member `m1`/`m2` of group `grp`.
async fn consume(url: &str, who: &str) {
    let pool = child_pool(url, 4);
    let queue = q("chaos");
    let stop = CancellationToken::new();
    let result = match who {
        "alo" | "eo" => {
            let (delivery, table) = match who {
                "alo" => (Delivery::AtLeastOnce, "seen_alo"),
                _ => (Delivery::ExactlyOnce, "ledger_eo"),
            };
            let consumer = tuned(Consumer::builder(pool.clone(), queue, c(who)))
                .delivery(delivery)
                .build()
                .unwrap();
            consumer.run(Recorder { pool, table }, stop).await
        }
        member => {
            let consumer = tuned(CoopConsumer::coop_builder(
                pool.clone(),
                queue,
                c("grp"),
                c(member),
            ))
            .dead_interval(Duration::from_secs(3))
            .heartbeat_interval(Duration::from_millis(500))
            .build()
            .unwrap();
            let table = "seen_grp";
            consumer.run(Recorder { pool, table }, stop).await
        }
    };
    panic!("consumer {who} stopped: {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Some(mode) = child_mode() else {
        return; // a chaos process only when re-run by the test below
    };
    let url = std::env::var("PGQ_CHILD_URL").unwrap();
    match mode.as_str() {
        "single" | "batch" | "copy" => produce(&url, &mode).await,
        "alo" | "eo" | "m1" | "m2" => consume(&url, &mode).await,
        other => panic!("unknown chaos child mode {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet of processes.

/// One process of the fleet: running, or waiting to be restarted.
struct Slot {
    role: &'static str,
    proc: Option<Proc>,
    restart_at: Option<Instant>,
}

struct Fleet {
    slots: Vec<Slot>,
    url: String,
    /// The ticker config files (ticker A, ticker B).
    ticker_configs: [PathBuf; 2],
    /// Processes that exited without being killed (with their last lines).
    unexpected: Vec<String>,
}

impl Fleet {
    fn start(url: &str, ticker_configs: [PathBuf; 2]) -> Fleet {
        let mut fleet = Fleet {
            slots: Vec::new(),
            url: url.to_owned(),
            ticker_configs,
            unexpected: Vec::new(),
        };
        let restart_at = Some(Instant::now());
        let slot = |role| Slot {
            role,
            proc: None,
            restart_at,
        };
        fleet.slots = ROLES.map(slot).into();
        fleet.tend(true);
        fleet
    }

    fn spawn(&self, role: &str) -> Proc {
        match role {
            "ticker-a" | "ticker-b" => {
                let config = &self.ticker_configs[usize::from(role == "ticker-b")];
                let mut cmd = command("pgq-ticker");
                cmd.arg(config).env("RUST_LOG", "pgq_ticker=info");
                Proc::spawn(cmd)
            }
            _ => spawn_test_child("chaos::child", role, &[("PGQ_CHILD_URL", &self.url)]),
        }
    }

    fn slot(&mut self, role: &str) -> &mut Slot {
        self.slots.iter_mut().find(|s| s.role == role).unwrap()
    }

    /// SIGKILL `role`'s process; it is restarted after `down` (never with `None`). A process
    /// that is down already stays down that long instead (with `None`: for good — a producer
    /// killed by a fault just before the calm must not be restarted into the drain, where its
    /// newest events would always be on their way and count as lost).
    fn kill(&mut self, role: &str, down: Option<Duration>) {
        let slot = self.slot(role);
        if let Some(mut p) = slot.proc.take() {
            p.sigkill();
        }
        slot.restart_at = down.map(|d| Instant::now() + d);
    }

    /// Restart the processes that are due (`all`: every stopped one that is to come back), and
    /// note those that exited on their own (restarting them too).
    fn tend(&mut self, all: bool) {
        let now = Instant::now();
        let mut due = Vec::new();
        for slot in &mut self.slots {
            if let Some(p) = &mut slot.proc
                && let Some(status) = p.child.try_wait().unwrap()
            {
                let lines = p.lines();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                self.unexpected.push(format!(
                    "{} exited by itself ({status}):\n{tail}",
                    slot.role
                ));
                slot.proc = None;
                slot.restart_at = Some(now);
            }
            if slot.restart_at.is_some_and(|t| all || t <= now) {
                slot.restart_at = None;
                due.push(slot.role);
            }
        }
        for role in due {
            let proc = Some(self.spawn(role));
            self.slot(role).proc = proc;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup, faults and the checker.

/// The queue (rotating every 10 s, so rotation happens under the faults), the consumers, the
/// group with both members, and the record tables.
async fn setup(pool: &PgPool) {
    let queue = q("chaos");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    let config = QueueConfig {
        rotation_period: Some(Duration::from_secs(10)),
        ticker_max_lag: Some(Duration::from_millis(200)),
        ticker_idle_period: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    pgq_core::set_queue_config(&mut pool.acquire().await.unwrap(), &queue, &config)
        .await
        .unwrap();
    for name in ["alo", "eo"] {
        pgq_core::register_consumer(pool, &queue, &c(name))
            .await
            .unwrap();
    }
    for member in ["m1", "m2"] {
        pgq_core::coop_register_member(pool, &queue, &c("grp"), &c(member))
            .await
            .unwrap();
    }
    // No unique keys on the record tables: a duplicate shows as a second row.
    exec(
        pool,
        "create sequence chaos_ids; \
         create table produced (id bigint primary key, kind text not null); \
         create table seen_alo (id bigint not null, ev_id bigint not null); \
         create table seen_grp (id bigint not null, ev_id bigint not null); \
         create table ledger_eo (id bigint not null, ev_id bigint not null); \
         create index on seen_alo (id); create index on seen_grp (id); \
         create index on ledger_eo (id)",
    )
    .await;
}

/// A ticker config file in `dir`: connects through `relay`, with 1 s keepalives so the server
/// ends a partitioned session within seconds (releasing the ticker lock), and a short retry
/// period so retried events come back quickly.
fn ticker_config(dir: &Path, name: &str, relay: &Relay, url: &str) -> PathBuf {
    let url = format!(
        "{}?keepalives_idle=1&keepalives_interval=1&keepalives_count=1",
        relay.url(url)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "databases = [\"{url}\"]\nticker_period = \"100ms\"\nretry_period = \"300ms\"\n\
             maint_period = \"1s\"\ntick_statement_timeout = \"3s\"\n"
        ),
    )
    .unwrap();
    path
}

/// The faults injected, by kind.
#[derive(Debug, Default)]
struct Faults {
    kills: HashMap<&'static str, u32>,
    /// `pg_terminate_backend` rounds, and the sessions they ended.
    terminations: u32,
    sessions_ended: u32,
    restarts: u32,
    freezes: u32,
}

impl Faults {
    fn total(&self) -> u32 {
        self.kills.values().sum::<u32>() + self.terminations + self.restarts + self.freezes
    }
}

/// `pg_terminate_backend` of 1–3 random client sessions of the database (not the test's own);
/// how many were ended.
async fn terminate_sessions(pool: &PgPool, rng: &mut fastrand::Rng) -> u32 {
    let Ok(mut pids) = sqlx::query_scalar::<_, i32>(
        "select pid from pg_stat_activity where datname = current_database() \
           and backend_type = 'client backend' and pid <> pg_backend_pid() \
           and application_name <> $1 order by pid",
    )
    .bind(SELF_APP)
    .fetch_all(pool)
    .await
    else {
        return 0;
    };
    let mut ended = 0;
    for _ in 0..rng.u32(1..=3).min(pids.len() as u32) {
        let pid = pids.swap_remove(rng.usize(..pids.len()));
        let r = sqlx::query_scalar::<_, bool>("select pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(pool)
            .await;
        ended += u32::from(matches!(r, Ok(true)));
    }
    ended
}

/// What the checker found.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    events: i64,
    /// (consumer, committed non-failing events it never recorded).
    lost: Vec<(&'static str, i64)>,
    /// Extra rows in the exactly-once ledger.
    duplicates: i64,
    /// Always-failing events recorded as handled (in the ledger: a failed handler's write kept).
    handled_failing: i64,
    dl_expected: i64,
    dl_found: i64,
    /// Failing events with no dead letter from a consumer.
    dl_missing: i64,
    /// Dead letters of events that should not have one, or second ones.
    dl_extra: i64,
}

impl Tally {
    fn lost(&self) -> i64 {
        self.lost.iter().map(|(_, n)| n).sum()
    }

    fn settled(&self) -> bool {
        self.lost() == 0 && self.dl_missing == 0
    }
}

async fn tally(pool: &PgPool) -> sqlx::Result<Tally> {
    let events: i64 = sqlx::query_scalar("select count(*) from produced")
        .fetch_one(pool)
        .await?;
    let mut lost = Vec::new();
    for (name, table) in CONSUMERS {
        let sql = format!(
            "select count(*) from produced p where p.id % $1 <> 0 \
               and not exists (select from {table} s where s.id = p.id)"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(FAILING)
            .fetch_one(pool)
            .await?;
        lost.push((name, n));
    }
    let duplicates: i64 = sqlx::query_scalar(
        "select coalesce(sum(n - 1), 0)::bigint from \
           (select count(*) n from ledger_eo group by id having count(*) > 1) d",
    )
    .fetch_one(pool)
    .await?;
    let handled_failing: i64 = sqlx::query_scalar(
        "select (select count(*) from ledger_eo where id % $1 = 0) \
              + (select count(*) from seen_alo where id % $1 = 0) \
              + (select count(*) from seen_grp where id % $1 = 0)",
    )
    .bind(FAILING)
    .fetch_one(pool)
    .await?;
    let failing: Vec<i64> = sqlx::query_scalar("select id from produced where id % $1 = 0")
        .bind(FAILING)
        .fetch_all(pool)
        .await?;
    let filter = DeadLetterFilter {
        queue: Some(q("chaos")),
        ..Default::default()
    };
    let letters = pgq_core::list_dead_letters(pool, &filter)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    // Per (consumer, event id); a group member's letters count for the group.
    let mut found: HashMap<(String, i64), i64> = HashMap::new();
    for dl in &letters {
        let group = dl.consumer.split('.').next().unwrap_or_default().to_owned();
        let id = dl.data.as_deref().unwrap_or_default().parse().unwrap_or(-1);
        *found.entry((group, id)).or_default() += 1;
    }
    let mut dl_missing = 0;
    let mut expected_found = 0;
    for id in &failing {
        for (name, _) in CONSUMERS {
            match found.get(&(name.to_owned(), *id)) {
                Some(n) => expected_found += n.min(&1),
                None => dl_missing += 1,
            }
        }
    }
    let dl_found = letters.len() as i64;
    Ok(Tally {
        events,
        lost,
        duplicates,
        handled_failing,
        dl_expected: failing.len() as i64 * CONSUMERS.len() as i64,
        dl_found,
        dl_missing,
        dl_extra: dl_found - expected_found,
    })
}

/// The checker's pool: gives up quickly while the server is away, sessions marked as the
/// test's own.
fn checker_pool(url: &str) -> PgPool {
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options.application_name(SELF_APP))
}

/// The tally once it has settled (or after [`DRAIN`]), waiting out transient errors.
async fn settled_tally(pool: &PgPool) -> Tally {
    let start = Instant::now();
    loop {
        match tally(pool).await {
            Ok(t) if t.settled() || start.elapsed() > DRAIN => return t,
            Ok(_) => {}
            Err(e) if start.elapsed() > DRAIN => panic!("the checker's queries fail: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Print where the events nobody received are (a failed run's evidence): in which event table,
/// their transaction, the queue's rotation state, the subscriptions and the newest ticks.
async fn explain_missing(pool: &PgPool) {
    let queries = [
        "select p.id, p.kind, p.xmin::text as produced_xid, e.tableoid::regclass::text as tbl,
                e.ev_id, e.ev_txid::text as txid, e.ev_time, e.ev_owner, e.ev_retry,
                (select min(tick_id) from pgq.tick t
                  where txid_visible_in_snapshot(e.ev_txid, t.tick_snapshot)) as first_tick_seeing
           from produced p
           left join pgq.event_template e on e.ev_data = p.id::text
          where p.id % 97 <> 0 and not exists (select from seen_alo s where s.id = p.id)
          order by p.id limit 30",
        "select queue_cur_table, queue_switch_step1::text, queue_switch_step2::text,
                queue_switch_time, queue_rotation_period::text from pgq.queue",
        "select s.*, c.co_name from pgq.subscription s
           join pgq.consumer c on c.co_id = s.sub_consumer order by s.sub_id",
        "select tick_id, tick_time, tick_snapshot::text, tick_event_seq from pgq.tick
          order by tick_id desc limit 8",
        "select min(tick_id), count(*) from pgq.tick",
        "select tick_id, tick_time, tick_snapshot::text, tick_event_seq from pgq.tick
          order by tick_id limit 3",
        "select pid, application_name, state, wait_event_type, wait_event, backend_start,
                xact_start, state_change, left(query, 80) as query
           from pg_stat_activity where application_name like 'pgq-ticker%'
              or query like '%pgq.ticker%' order by pid",
        "select l.pid, l.objid, l.granted from pg_locks l where l.locktype = 'advisory'",
        "select name, setting from pg_settings
          where name in ('fsync', 'synchronous_commit', 'full_page_writes')",
        "select tableoid::regclass::text, count(*), min(ev_txid)::text, max(ev_txid)::text
           from pgq.event_template group by 1 order by 1",
    ];
    for sql in queries {
        let rows: Result<Vec<serde_json::Value>, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(
            format!("select to_jsonb(x) from ({sql}) x"),
        ))
        .fetch_all(pool)
        .await;
        eprintln!(
            "chaos: evidence: {}",
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        match rows {
            Ok(rows) => rows.iter().for_each(|r| eprintln!("  {r}")),
            Err(e) => eprintln!("  (failed: {e})"),
        }
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_duplicates_nothing() {
    if child_mode().is_some() {
        return;
    }
    let secs: u64 = std::env::var("PGQ_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("PGQ_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos: seed {seed}, {secs}s of faults (replay: PGQ_CHAOS_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);

    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    let url = db.url();
    setup(db.pool()).await;
    db.pool().close().await;
    let relays = [
        Relay::start(cluster.port()).await.unwrap(),
        Relay::start(cluster.port()).await.unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        ticker_config(dir.path(), "a", &relays[0], &url),
        ticker_config(dir.path(), "b", &relays[1], &url),
    ];
    let pool = checker_pool(&url);
    let mut fleet = Fleet::start(&url, configs);
    crate::support::wait_for("every consumer to record events", || async {
        let sql = "select least((select count(*) from seen_alo), (select count(*) from seen_grp), \
                   (select count(*) from ledger_eo))";
        count(&pool, sql).await > 0
    })
    .await;

    // The faults.
    let mut faults = Faults::default();
    let mut thaw_at: [Option<Instant>; 2] = [None, None];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next = Instant::now();
    while Instant::now() < end {
        fleet.tend(false);
        for (relay, at) in relays.iter().zip(&mut thaw_at) {
            if at.is_some_and(|t| t <= Instant::now()) {
                relay.thaw();
                *at = None;
            }
        }
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        next = Instant::now() + Duration::from_millis(rng.u64(300..=2500));
        match rng.u32(0..10) {
            0..4 => {
                let role = ROLES[rng.usize(..ROLES.len())];
                fleet.kill(role, Some(Duration::from_millis(rng.u64(0..=4000))));
                *faults.kills.entry(role).or_default() += 1;
            }
            4..7 => {
                let ended = terminate_sessions(&pool, &mut rng).await;
                faults.terminations += u32::from(ended > 0);
                faults.sessions_ended += ended;
            }
            7..9 => {
                let i = rng.usize(..2);
                if thaw_at[i].is_none() {
                    relays[i].freeze();
                    thaw_at[i] = Some(Instant::now() + Duration::from_millis(rng.u64(1000..=8000)));
                    faults.freezes += 1;
                }
            }
            _ => {
                tokio::task::block_in_place(|| cluster.stop_immediate())
                    .expect("stop -m immediate");
                tokio::time::sleep(Duration::from_millis(rng.u64(200..=3000))).await;
                tokio::task::block_in_place(|| cluster.start()).expect("start again");
                faults.restarts += 1;
            }
        }
    }

    // Calm: every relay flowing, every process back, the producers stopped; then drain.
    relays.iter().for_each(Relay::thaw);
    for role in PRODUCERS {
        fleet.kill(role, None);
    }
    fleet.tend(true);
    assert!(
        PRODUCERS.iter().all(|role| fleet.slot(role).proc.is_none()),
        "no producer runs during the drain"
    );
    let drain_start = Instant::now();
    let mut t = settled_tally(&pool).await;
    if t.settled() {
        // Nothing may be waiting for a retry (a handled event coming again would be a duplicate
        // for the exactly-once consumer): wait for the retry queue to empty, then count again.
        crate::support::wait_for("the retry queue to empty", || async {
            count(&pool, "select count(*) from pgq.retry_queue").await == 0
        })
        .await;
        t = settled_tally(&pool).await;
    }
    fleet.tend(false);
    if !t.settled() {
        explain_missing(&pool).await;
        for role in ["ticker-a", "ticker-b"] {
            let lines = fleet
                .slot(role)
                .proc
                .as_ref()
                .map(Proc::lines)
                .unwrap_or_default();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n  ");
            eprintln!("chaos: evidence: the last lines of {role}:\n  {tail}");
        }
    }
    eprintln!(
        "chaos: faults {faults:?}; drained in {:.1}s; {:?}",
        drain_start.elapsed().as_secs_f64(),
        t
    );
    eprintln!(
        "chaos: seed {seed}, {} faults injected, {} events, {} lost, {} duplicates (exactly-once), \
         dead letters expected {} found {}",
        faults.total(),
        t.events,
        t.lost(),
        t.duplicates,
        t.dl_expected,
        t.dl_found
    );
    assert!(
        fleet.unexpected.is_empty(),
        "processes exited without being killed (seed {seed}):\n{}",
        fleet.unexpected.join("\n---\n")
    );
    assert!(t.events > 0 && faults.total() > 0, "load and faults ran");
    assert_eq!(
        t.lost(),
        0,
        "lost events per consumer (seed {seed}): {:?}",
        t.lost
    );
    assert_eq!(t.duplicates, 0, "exactly-once duplicates (seed {seed})");
    assert_eq!(
        t.handled_failing, 0,
        "always-failing events recorded as handled (seed {seed})"
    );
    assert_eq!(
        (t.dl_missing, t.dl_extra),
        (0, 0),
        "dead letters missing / extra (seed {seed})"
    );
    assert_eq!(t.dl_expected, t.dl_found, "dead letters (seed {seed})");
}
