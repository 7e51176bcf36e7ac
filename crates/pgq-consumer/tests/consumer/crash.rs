//! Consumer processes killed with SIGKILL: redelivery, and exactly-once without duplicates.
//!
//! The child process is this test binary run again with `CHILD_ENV` set: `child_process` then
//! acts as a consumer process until it is killed (without the variable it does nothing).

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt;
use pgq_consumer::{Delivery, EventContext, Handler, HandlerError};
use pgq_core::sqlx::PgPool;
use pgq_core::{Event, QueueName};
use pgq_testkit::{Process, TestDb};
use tokio_util::sync::CancellationToken;

use crate::common::{builder, c, count, exec, produce, q, queue, tick, wait_for};

pub(crate) const CHILD_ENV: &str = "PGQ_CONSUMER_TEST_CHILD";

/// Start a consumer process: `mode` is `hang` (at-least-once; records each event, then hangs
/// after 10) or `exactly_once` (writes each event in the batch's transaction).
fn spawn_child(mode: &str, url: &str, queue: &QueueName) -> Process {
    spawn_test_child("crash::child_process", mode, url, queue)
}

/// Re-run this test binary as a consumer process: only the test `test` runs, with `CHILD_ENV`
/// set to `mode`, and the database and queue in `PGQ_CHILD_URL` / `PGQ_CHILD_QUEUE`. Its
/// standard error is collected ([`Process::log`]); it is killed if the test ends first.
pub(crate) fn spawn_test_child(test: &str, mode: &str, url: &str, queue: &QueueName) -> Process {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("PGQ_CHILD_URL", url)
        .env("PGQ_CHILD_QUEUE", queue.as_str())
        .stdin(Stdio::null());
    Process::spawn(cmd)
}

pub(crate) fn sigkill(mut child: Process) {
    child.sigkill();
}

/// Writes each event into `target` in the batch's transaction, and notes progress outside it.
struct ExactlyOnceWriter {
    progress: PgPool,
}

impl Handler for ExactlyOnceWriter {
    async fn handle(&self, ev: &Event, ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        let tx = ctx.transaction().expect("exactly-once");
        pgq_core::sqlx::query("insert into target (ev_id) values ($1)")
            .bind(ev.ev_id)
            .execute(&mut *tx)
            .await?;
        pgq_core::sqlx::query("insert into progress values (1)")
            .execute(&self.progress)
            .await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
}

/// Records each event in `handled`, then hangs, holding its batch, once 10 are recorded.
pub(crate) struct RecordThenHang(pub(crate) PgPool);

impl Handler for RecordThenHang {
    async fn handle(&self, ev: &Event, _ctx: &mut EventContext<'_>) -> Result<(), HandlerError> {
        pgq_core::sqlx::query("insert into handled values ($1)")
            .bind(ev.ev_id)
            .execute(&self.0)
            .await?;
        if count(&self.0, "select count(*) from handled").await >= 10 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return; // only a consumer process when re-run by the tests below
    };
    let url = std::env::var("PGQ_CHILD_URL").unwrap();
    let queue = q(&std::env::var("PGQ_CHILD_QUEUE").unwrap());
    let pool = PgPool::connect(&url).await.unwrap();
    let never = CancellationToken::new();
    match mode.as_str() {
        "hang" => {
            let consumer = builder(&pool, &queue, "c").fetch_size(5).build().unwrap();
            consumer.run(RecordThenHang(pool), never).await.unwrap();
        }
        "exactly_once" => {
            let consumer = builder(&pool, &queue, "c")
                .delivery(Delivery::ExactlyOnce)
                .fetch_size(50)
                .poll_interval(Duration::from_millis(50))
                .build()
                .unwrap();
            let handler = ExactlyOnceWriter {
                progress: pool.clone(),
            };
            consumer.run(handler, never).await.unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_redelivered_after_the_consumer_is_sigkilled_mid_batch() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "crash").await;
    exec(pool, "create table handled (ev_id bigint)").await;
    let consumer = builder(pool, &q, "c").build().unwrap();
    consumer.register().await.unwrap();
    produce(pool, &q, 0, 100).await;
    tick(pool, &q).await;

    let child = spawn_child("hang", &db.url(), &q);
    wait_for("the child to handle 10 events", || async {
        count(pool, "select count(*) from handled").await >= 10
    })
    .await;
    let open = pgq_core::get_consumer_info(pool, &q, &c("c"))
        .await
        .unwrap()
        .unwrap()
        .current_batch
        .expect("the child holds a batch");
    sigkill(child);

    // The same batch comes again, whole, including the events the child had handled.
    let mut conn = pool.acquire().await.unwrap();
    let mut batch = consumer.next_batch(&mut conn).await.unwrap().unwrap();
    assert_eq!(batch.id(), open);
    let events: Vec<_> = batch.events().try_collect().await.unwrap();
    assert_eq!(events.len(), 100);
    batch.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_leaves_no_duplicates_after_repeated_sigkills() {
    const N: u64 = 2000;
    let db = TestDb::new().await;
    let pool = db.pool();
    let q = queue(pool, "eo_crash").await;
    exec(
        pool,
        "create table target (ev_id bigint); create table progress (x int)",
    )
    .await;
    builder(pool, &q, "c")
        .build()
        .unwrap()
        .register()
        .await
        .unwrap();
    for start in (0..N).step_by(400) {
        produce(pool, &q, start, start + 400).await;
        tick(pool, &q).await;
    }

    for _ in 0..4 {
        let before = count(pool, "select count(*) from progress").await;
        let child = spawn_child("exactly_once", &db.url(), &q);
        wait_for("the child to make progress", || async {
            count(pool, "select count(*) from progress").await >= before + 150
        })
        .await;
        sigkill(child);
    }
    let child = spawn_child("exactly_once", &db.url(), &q);
    wait_for("every event in the target", || async {
        count(pool, "select count(distinct ev_id) from target").await == N as i64
    })
    .await;
    sigkill(child);
    assert_eq!(
        count(pool, "select count(*) from target").await,
        N as i64,
        "0 duplicates"
    );
    assert!(
        count(pool, "select count(*) from progress").await > N as i64,
        "the kills interrupted work that was then redone"
    );
}
