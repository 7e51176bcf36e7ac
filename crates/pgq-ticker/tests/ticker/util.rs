//! Helpers: the `pgq-ticker` binary under test (run by [`TickerProc`] from pgq-testkit), queues
//! that tick every round, polling the database.

use sqlx::PgPool;

pub(crate) use pgq_testkit::{
    DEADLINE, TickerOptions, TickerProc, c, eventually, http_get, q, tick_count,
};

/// The binary under test.
pub(crate) const TICKER: &str = env!("CARGO_BIN_EXE_pgq-ticker");

/// A queue that pgq.ticker() ticks on every call (no idle back-off), not fast-polled.
pub(crate) async fn busy_queue(pool: &PgPool, name: &str) {
    pgq_core::create_queue(pool, &q(name)).await.unwrap();
    sqlx::query("select pgq.set_queue_config($1, 'ticker_idle_period', '0'), pgq.set_queue_config($1, 'ticker_max_lag', '1 millisecond')")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

/// Wait until `queue` has more than `n` ticks; the new count.
pub(crate) async fn ticks_beyond(pool: &PgPool, queue: &str, n: i64) -> i64 {
    eventually(&format!("more than {n} ticks on {queue}"), || async {
        let k = tick_count(pool, queue).await;
        (k > n).then_some(k)
    })
    .await
}
