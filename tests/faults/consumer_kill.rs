//! R1: a consumer process SIGKILLed mid-batch 20 times loses nothing; in exactly-once mode it
//! also leaves no duplicate.
//!
//! The consumer process is this test binary run again (see `support::spawn_test_child`):
//! `child_consumer` plays the consumer until it is killed, and does nothing in a normal run.

use std::time::Duration;

use pgq_consumer::{CancellationToken, Consumer, Delivery, EventContext, Handler, HandlerError};
use pgq_core::sqlx::PgPool;
use pgq_core::{Event, NewEvent, QueueName};
use pgq_testkit::TestDb;

use crate::support::{Proc, c, child_mode, q, scalar, spawn_test_child, wait_for};

const KILLS: u64 = 20;
const EVENTS: i64 = 1500;
const PER_TICK: i64 = 50;

/// Writes each event's number into `target`: in the batch's transaction when exactly-once,
/// else on its own; counts every handling in `progress` (outside any batch transaction).
struct Recorder {
    pool: PgPool,
}

impl Handler for Recorder {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let n: i64 = ev.ev_data.as_deref().unwrap_or_default().parse().unwrap();
        let insert = pgq_core::sqlx::query("insert into target (n) values ($1)").bind(n);
        match ctx.transaction() {
            Some(tx) => insert.execute(&mut *tx).await?,
            None => insert.execute(&self.pool).await?,
        };
        pgq_core::sqlx::query("insert into progress values (1)")
            .execute(&self.pool)
            .await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_consumer() {
    let Some(mode) = child_mode() else {
        return; // a consumer process only when re-run by the tests below
    };
    let pool = PgPool::connect(&std::env::var("PGQ_CHILD_URL").unwrap())
        .await
        .unwrap();
    let queue = q(&std::env::var("PGQ_CHILD_QUEUE").unwrap());
    let delivery = match mode.as_str() {
        "exactly_once" => Delivery::ExactlyOnce,
        "at_least_once" => Delivery::AtLeastOnce,
        other => panic!("unknown child mode {other}"),
    };
    let consumer = Consumer::builder(pool.clone(), queue, c("c"))
        .delivery(delivery)
        .fetch_size(20)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    consumer
        .run(Recorder { pool }, CancellationToken::new())
        .await
        .unwrap();
}

/// A queue with `EVENTS` events numbered 0.., in batches of `PER_TICK` (one tick after each).
async fn filled_queue(db: &TestDb) -> QueueName {
    let pool = db.pool();
    let queue = q("kill");
    pgq_core::create_queue(pool, &queue).await.unwrap();
    pgq_core::register_consumer(pool, &queue, &c("c"))
        .await
        .unwrap();
    crate::support::exec(
        pool,
        "create table target (n bigint); create table progress (x int)",
    )
    .await;
    for start in (0..EVENTS).step_by(PER_TICK as usize) {
        let events: Vec<NewEvent> = (start..start + PER_TICK)
            .map(|i| NewEvent::new("t", i.to_string()))
            .collect();
        pgq_core::insert_events(pool, &queue, &events)
            .await
            .unwrap();
        pgq_core::tick_now(&mut pool.acquire().await.unwrap(), &queue)
            .await
            .unwrap();
    }
    queue
}

fn spawn_consumer(db: &TestDb, queue: &QueueName, mode: &str) -> Proc {
    spawn_test_child(
        "consumer_kill::child_consumer",
        mode,
        &[
            ("PGQ_CHILD_URL", &db.url()),
            ("PGQ_CHILD_QUEUE", queue.as_str()),
        ],
    )
}

/// What [`kill_repeatedly`] did.
struct Kills {
    /// SIGKILLs of a running consumer process.
    kills: u64,
    /// Of those, the kills that hit a batch in progress (its work is redone by the next one).
    mid_batch: u64,
}

/// Whether the consumer process just killed left a batch unfinished.
///
/// At-least-once: the batch is opened in a transaction of its own, so an open batch shows in the
/// consumer's row. Exactly-once: the batch is opened and finished in one transaction, which the
/// kill aborts, so an unfinished batch shows as handlings (`progress`, committed on their own)
/// whose writes to `target` were rolled back: `progress - target` grows.
async fn left_batch_unfinished(
    pool: &PgPool,
    queue: &QueueName,
    mode: &str,
    wasted: &mut i64,
) -> bool {
    if mode == "at_least_once" {
        let info = pgq_core::get_consumer_info(pool, queue, &c("c"))
            .await
            .unwrap()
            .expect("the consumer is registered");
        return info.current_batch.is_some();
    }
    let now = scalar(
        pool,
        "select (select count(*) from progress) - (select count(*) from target)",
    )
    .await;
    let grew = now > *wasted;
    *wasted = now;
    grew
}

/// SIGKILL a consumer process `KILLS` times in the middle of a batch (each time after it handled
/// a few more events; a kill that lands between batches is not counted and is tried again), then
/// let a last one finish every event.
async fn kill_repeatedly(db: &TestDb, queue: &QueueName, mode: &str) -> Kills {
    let pool = db.pool();
    let mut done = Kills {
        kills: 0,
        mid_batch: 0,
    };
    let mut wasted = 0;
    // A kill lands between two batches only in the short gap after a finish; give up long
    // before that could explain a run of misses.
    while done.mid_batch < KILLS && done.kills < 3 * KILLS {
        let before = scalar(pool, "select count(*) from progress").await;
        let mut child = spawn_consumer(db, queue, mode);
        let step = 10 + (done.kills as i64 * 7) % 30;
        wait_for("the consumer process to make progress", || async {
            scalar(pool, "select count(*) from progress").await >= before + step
        })
        .await;
        assert!(
            child.child.try_wait().unwrap().is_none(),
            "the consumer process exited before it was killed\n{}",
            child.log()
        );
        child.sigkill();
        done.kills += 1;
        if left_batch_unfinished(pool, queue, mode, &mut wasted).await {
            done.mid_batch += 1;
        }
    }
    let _last = spawn_consumer(db, queue, mode);
    wait_for("every event in the target table", || async {
        scalar(pool, "select count(distinct n) from target").await == EVENTS
    })
    .await;
    // Every batch finished (nothing left that could still add a row).
    wait_for("the consumer to finish its last batch", || async {
        let info = pgq_core::get_consumer_info(pool, queue, &c("c"))
            .await
            .unwrap()
            .expect("the consumer is registered");
        info.current_batch.is_none() && info.pending_events == 0
    })
    .await;
    assert_eq!(
        scalar(pool, "select count(*) from pgq.retry_queue").await,
        0,
        "no event failed (the handler cannot fail): nothing waits for a retry"
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_exactly_once_consumer_sigkilled_20_times_loses_nothing_and_duplicates_nothing() {
    if child_mode().is_some() {
        return;
    }
    let db = TestDb::new().await;
    // No unique key on `target`: a duplicate delivery shows as a second row (with a key it would
    // fail the handler and hide in the retry queue).
    let queue = filled_queue(&db).await;
    let kills = kill_repeatedly(&db, &queue, "exactly_once").await;
    let pool = db.pool();
    assert_eq!(
        scalar(
            pool,
            "select count(*) from (select n from target group by n having count(*) > 1) d"
        )
        .await,
        0,
        "0 duplicates"
    );
    assert_eq!(
        kills.mid_batch, KILLS,
        "{KILLS} kills in the middle of a batch ({} kills in all)",
        kills.kills
    );
    assert_eq!(scalar(pool, "select count(*) from target").await, EVENTS);
    assert_eq!(
        scalar(
            pool,
            "select count(*) from generate_series(0, 1499) g where g not in (select n from target)"
        )
        .await,
        0,
        "0 lost"
    );
    let handled = scalar(pool, "select count(*) from progress").await;
    eprintln!(
        "R1 exactly-once: {EVENTS} events, {handled} handlings, {} of {} kills mid-batch",
        kills.mid_batch, kills.kills
    );
    assert!(
        handled > EVENTS,
        "the kills interrupted batches whose work was then redone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_at_least_once_consumer_sigkilled_20_times_mid_batch_loses_nothing() {
    if child_mode().is_some() {
        return;
    }
    let db = TestDb::new().await;
    let queue = filled_queue(&db).await;
    let Kills { kills, mid_batch } = kill_repeatedly(&db, &queue, "at_least_once").await;
    let pool = db.pool();
    let total = scalar(pool, "select count(*) from target").await;
    eprintln!(
        "R1 at-least-once: {EVENTS} events, {total} handled ({} redelivered), {mid_batch} of \
         {kills} kills with a batch open",
        total - EVENTS
    );
    assert_eq!(
        scalar(
            pool,
            "select count(distinct n) from target where n between 0 and 1499"
        )
        .await,
        EVENTS,
        "0 lost"
    );
    assert_eq!(
        mid_batch, KILLS,
        "{KILLS} kills with a batch open ({kills} kills in all)"
    );
    assert!(total > EVENTS, "killed batches were redelivered");
}
