//! A held xmin horizon (P9): batches that find the subscription row through its ctid and span
//! pending ticks, the fast tick's probe that never scans an event table, and the horizon holder.

use pgq_core::sqlx::{self, Connection as _, PgConnection};
use pgq_testkit::TestDb;

use crate::common::{drain, setup, tick};

/// A tick by pgq.ticker(queue) on a queue with ticker_max_lag 0 (unlike `tick`'s force_tick,
/// it does not move the event sequence, so event counts by sequence are exact).
async fn seq_tick(pool: &sqlx::PgPool, queue: &pgq_core::QueueName) -> pgq_core::TickId {
    sqlx::query("select pgq.set_queue_config($1, 'ticker_max_lag', '0')")
        .bind(queue.as_str())
        .execute(pool)
        .await
        .unwrap();
    let t: i64 = sqlx::query_scalar("select pgq.ticker($1)")
        .bind(queue.as_str())
        .fetch_one(pool)
        .await
        .unwrap();
    t.into()
}

/// The ctid of the consumer's current pgq.subscription row, as text.
async fn row_ctid(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("select ctid::text from pgq.subscription")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn next_batch_at_spans_pending_ticks_and_hands_back_the_rows_place() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "span", "reader").await;
    let mut ticks = Vec::new();
    for i in 0..3 {
        pgq_core::insert_event(pool, &q, "t", &format!("e{i}"))
            .await
            .unwrap();
        ticks.push(seq_tick(pool, &q).await);
    }

    // With a span of 0: the next tick only, as pgq.next_batch.
    let (info, hint) = pgq_core::next_batch_at(pool, &q, &c, None, 0)
        .await
        .unwrap();
    let info = info.expect("a batch");
    assert_eq!(info.cur_tick_id, ticks[0]);
    let hint = hint.expect("a hint");
    assert_eq!(
        format!("{hint:?}"),
        format!("RowHint({:?})", row_ctid(pool).await)
    );
    // The open batch comes again, through the hint.
    let (again, _) = pgq_core::next_batch_at(pool, &q, &c, Some(&hint), 0)
        .await
        .unwrap();
    assert_eq!(again.map(|b| b.batch_id), Some(info.batch_id));
    let hint = pgq_core::finish_own_batch_at(pool, info.batch_id, &q, &c)
        .await
        .unwrap()
        .expect("finished");
    assert_eq!(
        format!("{hint:?}"),
        format!("RowHint({:?})", row_ctid(pool).await)
    );
    // Finishing again finishes nothing.
    assert_eq!(
        pgq_core::finish_own_batch_at(pool, info.batch_id, &q, &c)
            .await
            .unwrap(),
        None
    );

    // Spanning: both pending ticks in one batch, with both events.
    let (info, hint) = pgq_core::next_batch_at(pool, &q, &c, Some(&hint), 1000)
        .await
        .unwrap();
    let info = info.expect("a batch");
    assert_eq!(info.prev_tick_id, ticks[0]);
    assert_eq!(
        info.cur_tick_id, ticks[2],
        "the batch spans every pending tick"
    );
    let events = pgq_core::get_batch_events(pool, info.batch_id)
        .await
        .unwrap();
    let mut data: Vec<_> = events.iter().filter_map(|e| e.ev_data.clone()).collect();
    data.sort();
    assert_eq!(data, ["e1", "e2"]);
    pgq_core::finish_own_batch_at(pool, info.batch_id, &q, &c)
        .await
        .unwrap()
        .expect("finished");
    // A stale hint is only a hint.
    let (none, _) = pgq_core::next_batch_at(pool, &q, &c, hint.as_ref(), 1000)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(drain(pool, &q, &c).await.is_empty());
}

#[tokio::test]
async fn next_batch_at_spans_no_further_than_max_events_but_at_least_one_tick() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "cap", "reader").await;
    let mut ticks = Vec::new();
    for n in [5, 5, 20] {
        for i in 0..n {
            pgq_core::insert_event(pool, &q, "t", &i.to_string())
                .await
                .unwrap();
        }
        ticks.push(seq_tick(pool, &q).await);
    }
    // 8 events: the first tick (5) fits, the second (10) does not; at least one tick.
    let (info, _) = pgq_core::next_batch_at(pool, &q, &c, None, 8)
        .await
        .unwrap();
    let info = info.expect("a batch");
    assert_eq!(info.cur_tick_id, ticks[0]);
    pgq_core::finish_own_batch_at(pool, info.batch_id, &q, &c)
        .await
        .unwrap();
    // 3 events: not even the next tick (5) fits, which is taken all the same.
    let (info, _) = pgq_core::next_batch_at(pool, &q, &c, None, 3)
        .await
        .unwrap();
    let info = info.expect("a batch");
    assert_eq!(info.cur_tick_id, ticks[1]);
    pgq_core::finish_own_batch_at(pool, info.batch_id, &q, &c)
        .await
        .unwrap();
}

#[tokio::test]
async fn fast_tick_finds_new_events_without_scanning_the_event_table() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "probe", "reader").await;
    // A few thousand events in separate transactions and a tick covering them; the event table
    // is never analyzed (autovacuum has not come by), as right after a rotation.
    for _ in 0..20 {
        let mut tx = pool.begin().await.unwrap();
        let many: Vec<_> = (0..200)
            .map(|i| pgq_core::NewEvent::new("t", i.to_string()))
            .collect();
        pgq_core::insert_events(&mut *tx, &q, &many).await.unwrap();
        tx.commit().await.unwrap();
    }
    tick(pool, &q).await;
    let table: String = sqlx::query_scalar("select pgq.current_event_table($1)")
        .bind(q.as_str())
        .fetch_one(pool)
        .await
        .unwrap();
    let queue_id: i32 = sqlx::query_scalar("select queue_id from pgq.queue where queue_name = $1")
        .bind(q.as_str())
        .fetch_one(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    // Nothing new: no tick, and no sequential scan of the event table (this session's
    // statistics before and after the call: PostgreSQL keeps a session's counts of earlier
    // statements there until it reports them, at most once a second, so only the difference
    // is fast_tick's).
    let seq_scans = || {
        sqlx::query_scalar::<_, i64>(
            "select coalesce(sum(seq_scan), 0)::int8 from pg_stat_xact_user_tables \
              where schemaname || '.' || relname = $1",
        )
        .bind(&table)
    };
    let before = seq_scans().fetch_one(&mut *tx).await.unwrap();
    let t: Option<i64> = sqlx::query_scalar("select pgq_rs.fast_tick($1)")
        .bind(queue_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(t, None);
    let after = seq_scans().fetch_one(&mut *tx).await.unwrap();
    assert_eq!(after - before, 0, "fast_tick scanned {table} sequentially");
    tx.rollback().await.unwrap();
    drop(conn);
    // And a new event is found.
    pgq_core::insert_event(pool, &q, "t", "new").await.unwrap();
    let t: Option<i64> = sqlx::query_scalar("select pgq_rs.fast_tick($1)")
        .bind(queue_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        t.is_some(),
        "a committed event not covered by the newest tick is ticked"
    );
    let events = drain(pool, &q, &c).await;
    assert_eq!(events.len(), 4001);
}

#[tokio::test]
async fn the_horizon_holder_is_named() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut holder = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("set application_name = 'long report'")
        .execute(&mut holder)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    sqlx::query("begin isolation level repeatable read")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("select count(*) from pg_class")
        .execute(&mut holder)
        .await
        .unwrap();
    // Other tests' sessions may hold older snapshots for a moment: look for ours among a few
    // tries rather than expect it first.
    let mut found = None;
    for _ in 0..50 {
        let h = pgq_core::xmin_horizon_holder(pool).await.unwrap();
        if let Some(h) = h.filter(|h| h.pid == Some(pid)) {
            found = Some(h);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let h = found.expect("the repeatable read session holds the horizon");
    assert_eq!(h.kind, "session");
    assert_eq!(h.application.as_deref(), Some("long report"));
    assert_eq!(h.state.as_deref(), Some("idle in transaction"));
    assert!(h.since.is_some() && h.held_for.is_some());
    sqlx::query("commit").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
}

/// The consumer's row, as pgq writes it: (last tick, next tick, batch open).
async fn sub_row(pool: &sqlx::PgPool, consumer: &str) -> (i64, Option<i64>, bool) {
    sqlx::query_as(
        "select s.sub_last_tick, s.sub_next_tick, s.sub_batch is not null
           from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
          where c.co_name = $1",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `finish_next_batch_at` leaves the row as pgq's finish + next would, in one update (one new
/// row version instead of two), hands out the next batch with its events, only finishes when no
/// later tick exists, and changes nothing for a batch the consumer does not hold.
#[tokio::test]
async fn finish_next_batch_at_is_finish_then_next_in_one_update() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (q, c) = setup(pool, "fnext", "ours").await;
    let theirs = pgq_core::ConsumerName::new("theirs").unwrap();
    pgq_core::register_consumer(pool, &q, &theirs)
        .await
        .unwrap();
    for i in 0..3 {
        pgq_core::insert_event(pool, &q, "t", &format!("e{i}"))
            .await
            .unwrap();
        seq_tick(pool, &q).await;
    }
    // Both take the first tick.
    let (ours, hint) = pgq_core::next_batch_at(pool, &q, &c, None, 0)
        .await
        .unwrap();
    let ours = ours.unwrap();
    let theirs_batch = pgq_core::next_batch(pool, &q, &theirs)
        .await
        .unwrap()
        .unwrap();
    assert!(hint.is_some());

    // Another consumer's batch: nothing finished, nothing changed.
    let before = sub_row(pool, "ours").await;
    let r = pgq_core::finish_next_batch_at(pool, theirs_batch, &q, &c, 1000, None)
        .await
        .unwrap();
    assert!(!r.finished && r.next.is_none(), "{r:?}");
    assert_eq!(sub_row(pool, "ours").await, before);

    // Ours: finished and the rest (two ticks) opened, exactly as pgq's finish + next_batch_custom
    // (spanning) leave "theirs".
    let ctid_before = row_ctid_of(pool, "ours").await;
    let r = pgq_core::finish_next_batch_at(pool, ours.batch_id, &q, &c, 1000, None)
        .await
        .unwrap();
    assert!(r.finished, "{r:?}");
    let next = r.next.expect("the next batch opened");
    pgq_core::finish_batch(pool, theirs_batch).await.unwrap();
    let theirs_next = pgq_core::next_batch_custom(
        &mut *pool.acquire().await.unwrap(),
        &q,
        &theirs,
        pgq_core::BatchTuning {
            min_count: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next.prev_tick_id, ours.cur_tick_id);
    assert_eq!(next.cur_tick_id, theirs_next.cur_tick_id);
    let (last, nxt, open) = sub_row(pool, "ours").await;
    let (t_last, t_nxt, t_open) = sub_row(pool, "theirs").await;
    assert_eq!((last, nxt, open), (t_last, t_nxt, t_open));
    // One update: the row's new version is the hint, and the version before it was the one
    // the batch was opened in (a ctid moves once per update on a page with room).
    assert_eq!(
        r.hint.as_ref().map(|h| format!("{h:?}")),
        Some(format!("RowHint({:?})", row_ctid_of(pool, "ours").await))
    );
    assert_ne!(ctid_before, row_ctid_of(pool, "ours").await);
    let events = pgq_core::get_batch_events(pool, next.batch_id)
        .await
        .unwrap();
    let data: Vec<_> = events.iter().filter_map(|e| e.ev_data.clone()).collect();
    assert_eq!(data, ["e1", "e2"]);

    // No later tick: only finished.
    let r = pgq_core::finish_next_batch_at(pool, next.batch_id, &q, &c, 1000, None)
        .await
        .unwrap();
    assert!(r.finished && r.next.is_none(), "{r:?}");
    let (last, nxt, open) = sub_row(pool, "ours").await;
    assert_eq!((last, nxt, open), (next.cur_tick_id.0, None, false));
}

async fn row_ctid_of(pool: &sqlx::PgPool, consumer: &str) -> String {
    sqlx::query_scalar(
        "select s.ctid::text from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
          where c.co_name = $1",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}
