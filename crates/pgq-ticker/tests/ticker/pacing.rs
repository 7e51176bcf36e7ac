//! Many consumers on a lag-0 queue: fast ticks are spaced by the number of consumers, so the
//! batches they cause do not grow with it (docs/ticker.md, "Many consumers").

use std::time::{Duration, Instant};

use pgq_testkit::TestDb;

use crate::util::{TICKER, TickerProc, c, eventually, q};

/// Fast ticks of `queue` from `from` on, as gaps in milliseconds between consecutive ticks.
async fn tick_gaps_ms(pool: &sqlx::PgPool, queue: &str, from: i64) -> Vec<f64> {
    sqlx::query_scalar::<_, Option<f64>>(
        "select extract(epoch from tick_time - lag(tick_time) over (order by tick_id))::float8 * 1000
           from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
          where q.queue_name = $1 and t.tick_id > $2
          order by tick_id",
    )
    .bind(queue)
    .bind(from)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .flatten()
    .collect()
}

/// Produce one event every millisecond or so for `secs` on `queue`; returns the newest tick id
/// from before.
async fn produce_steadily(pool: &sqlx::PgPool, queue: &str, secs: u64) -> i64 {
    let from: i64 = sqlx::query_scalar(
        "select coalesce(max(tick_id), 0) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1",
    )
    .bind(queue)
    .fetch_one(pool)
    .await
    .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        pgq_core::insert_event(pool, &q(queue), "t", "x")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    from
}

async fn lag0_queue_with_consumers(pool: &sqlx::PgPool, queue: &str, consumers: usize) {
    pgq_core::create_queue(pool, &q(queue)).await.unwrap();
    sqlx::query("select pgq.set_queue_config($1, 'ticker_max_lag', '0')")
        .bind(queue)
        .execute(pool)
        .await
        .unwrap();
    for i in 0..consumers {
        pgq_core::register_consumer(pool, &q(queue), &c(&format!("c{i}")))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn ten_consumers_space_fast_ticks_ten_milliseconds_apart_one_does_not() {
    // Ten consumers (registered just now, so active): fast ticks at least 10 ms apart.
    let many = TestDb::new().await;
    lag0_queue_with_consumers(many.pool(), "many", 10).await;
    let t = TickerProc::spawn(TICKER, &["--db", &many.url(), "--ticker-period", "1h"]);
    eventually("the pacing to be logged", || async {
        t.logs()
            .contains("fast ticks at least 10ms apart")
            .then_some(())
    })
    .await;
    let from = produce_steadily(many.pool(), "many", 3).await;
    let gaps = tick_gaps_ms(many.pool(), "many", from).await;
    assert!(gaps.len() >= 20, "too few fast ticks to judge: {gaps:?}");
    // tick_time is the ticking transaction's start: allow a millisecond of skew.
    let close = gaps.iter().filter(|g| **g < 9.0).count();
    assert!(
        close == 0,
        "{close} of {} fast ticks closer than 10 ms with 10 consumers: {gaps:?}",
        gaps.len()
    );
    drop(t);

    // One consumer: no spacing beyond the poll; ticks come as often as events do.
    let one = TestDb::new().await;
    lag0_queue_with_consumers(one.pool(), "one", 1).await;
    let t = TickerProc::spawn(TICKER, &["--db", &one.url(), "--ticker-period", "1h"]);
    eventually("the ticker to start ticking", || async {
        t.logs().contains("ticking").then_some(())
    })
    .await;
    let from = produce_steadily(one.pool(), "one", 3).await;
    let gaps = tick_gaps_ms(one.pool(), "one", from).await;
    let close = gaps.iter().filter(|g| **g < 9.0).count();
    assert!(
        close * 2 > gaps.len(),
        "with one consumer most fast ticks should be closer than 10 ms: {gaps:?}"
    );
}
