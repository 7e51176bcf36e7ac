//! R3: the ticker SIGKILLed and restarted, and two tickers on one database: exactly one ticks,
//! the other takes over when it dies, and a producer and a consumer running throughout lose
//! nothing.

use pgq_testkit::TestDb;

use crate::load::Load;
use crate::support::{Proc, busy_queue, tick_count, ticker_lock_holders, wait_for};

const ACTIVE: &str = "\"ticking\"";
const STANDBY: &str = "standing by";

fn ticker(url: &str) -> Proc {
    Proc::ticker(&[
        "--db",
        url,
        "--ticker-period",
        "100ms",
        "--log-format",
        "json",
    ])
}

/// Wait until `consumed` grows by `n` (events flow, so some ticker ticks).
async fn flowing(consumed: &crate::load::Consumed, n: usize) {
    let now = consumed.len();
    wait_for("events to flow", || async { consumed.len() >= now + n }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_ticker_sigkill_restart_and_two_tickers_lose_nothing() {
    if crate::support::child_mode().is_some() {
        return;
    }
    let db = TestDb::new().await;
    let url = db.url();
    let pool = db.pool();
    let queue = busy_queue(pool, "r3").await;
    let load = Load::start(&url, &queue, 10).await;
    let consumed = &load.consumed;

    // One ticker, killed.
    let mut first = ticker(&url);
    flowing(consumed, 100).await;
    first.sigkill();
    let at_kill = tick_count(pool, "r3").await;

    // Restarted, and a second one started at the same moment: exactly one ticks.
    let (a, b) = (ticker(&url), ticker(&url));
    wait_for("one active and one standby ticker", || async {
        let (la, lb) = (a.log(), b.log());
        (la.contains(ACTIVE) && lb.contains(STANDBY))
            || (lb.contains(ACTIVE) && la.contains(STANDBY))
    })
    .await;
    let (mut active, standby) = if a.log().contains(ACTIVE) {
        (a, b)
    } else {
        (b, a)
    };
    flowing(consumed, 100).await;
    assert!(tick_count(pool, "r3").await > at_kill);
    assert_eq!(
        ticker_lock_holders(pool).await,
        1,
        "exactly one ticker holds the lock"
    );
    let holder = pgq_core::ticker_lock_holder(
        &mut *pool.acquire().await.unwrap(),
        pgq_core::TICKER_LOCK_KEY,
    )
    .await
    .unwrap()
    .expect("a lock holder");
    assert_eq!(holder.application_name, "pgq-ticker");
    assert!(
        !standby.log().contains(ACTIVE),
        "the standby ticked too:\n{}",
        standby.log()
    );

    // The active one killed: the standby takes over.
    active.sigkill();
    let at_kill = tick_count(pool, "r3").await;
    wait_for("the standby to take over", || async {
        standby.log().contains("took over the ticker lock")
    })
    .await;
    flowing(consumed, 100).await;
    assert!(tick_count(pool, "r3").await > at_kill);

    let errors = load.produced.errors();
    let acked = load.finish().await;
    eprintln!(
        "R3: {acked} events committed across 2 ticker kills and a standby takeover, all \
         consumed ({errors} send errors)"
    );
    assert_eq!(errors, 0, "sending does not depend on the ticker");
}
