//! The same steps on the pgq extension and on the SQL backend; every result compared. Each query
//! names its columns (rows are compared as JSON objects) and leaves out what legitimately
//! differs between two databases: times, transaction ids, snapshots.

use futures_util::TryStreamExt;
use pgq_core::sqlx::PgPool;
use pgq_core::{BatchId, EventId, NewEvent};
use pgq_testkit::{c, q};

use crate::harness::Pair;

#[tokio::test]
async fn queue_management_and_its_errors() {
    let p = Pair::new().await;
    p.expect(
        "select pgq.create_queue('q') a, pgq.create_queue('q') b, pgq.create_queue('other') c",
        r#"[{"a": 1, "b": 0, "c": 1}]"#,
    )
    .await;
    p.same("select pgq.create_queue(null) a").await;
    for (name, value) in [
        ("ticker_max_count", "3"),
        ("ticker_max_lag", "10"),
        ("ticker_idle_period", "60"),
        ("ticker_paused", "false"),
        ("rotation_period", "1 hour"),
        ("external_ticker", "off"),
        ("queue_ticker_max_count", "3"),
        ("disable_insert", "true"),
        ("per_tx_limit", "5"),
        ("bogus", "1"),
        ("Ticker_Max_Count", "1"),
    ] {
        p.same(&format!(
            "select pgq.set_queue_config('q', '{name}', '{value}') a"
        ))
        .await;
    }
    p.same("select pgq.set_queue_config('nope', 'ticker_max_count', '1') a")
        .await;
    p.same("select pgq.set_queue_config('q', 'ticker_max_count', null) a")
        .await;
    p.same("select pgq.set_queue_config(null, 'ticker_max_count', '1') a")
        .await;
    p.same("select pgq.set_queue_config('q', 'ticker_max_count', 'abc') a")
        .await;
    p.same(
        "select queue_name, queue_ntables, queue_cur_table, queue_rotation_period,
                queue_external_ticker, queue_ticker_paused, queue_ticker_max_count,
                queue_ticker_max_lag, queue_ticker_idle_period, ev_per_sec, ev_new, last_tick_id
           from pgq.get_queue_info()",
    )
    .await;
    p.same("select queue_name from pgq.get_queue_info('other')")
        .await;
    p.same("select queue_name from pgq.get_queue_info('nope')")
        .await;

    p.expect(
        "select pgq.register_consumer('q', 'a') a, pgq.register_consumer('q', 'a') b,
                pgq.register_consumer('q', 'b') c",
        r#"[{"a": 1, "b": 0, "c": 1}]"#,
    )
    .await;
    for sql in [
        "select pgq.register_consumer('nope', 'a') a",
        "select pgq.register_consumer('q', null) a",
        "select pgq.register_consumer(null, 'a') a",
        "select pgq.register_consumer_at('q', 'c', 99) a",
        "select pgq.register_consumer_at('q', 'c', 1) a",
        "select pgq.register_consumer_at('q', 'c', 1) a",
        "select pgq.next_batch('q', 'zz') a",
        "select pgq.next_batch('zz', 'a') a",
        "select pgq.next_batch('q', 'a') a",
        "select * from pgq.next_batch_info('q', 'a')",
        "select pgq.ticker('nope') a",
        "select pgq.ticker(null) a",
        "select pgq.ticker('q', 5, now(), 5) a",
        "select pgq.current_event_table('nope') a",
        "select pgq.insert_event('nope', 't', 'd') a",
        "select pgq.insert_event(null, 't', 'd') a",
        "select pgq.get_batch_events(9999)",
        "select pgq.batch_event_sql(9999) a",
        "select * from pgq.batch_event_tables(9999)",
        "select * from pgq.get_batch_info(9999)",
        "select pgq.finish_batch(9999) a",
        "select pgq.event_retry(9999, 1, 0) a",
        "select pgq.batch_retry(9999, 0) a",
        "select pgq.event_retry_raw('q', 'nobody', now(), 1, now(), 0, 't', 'd', null, null,
                                    null, null) a",
        "select pgq.force_tick('nope') a",
        "select pgq.grant_perms('nope') a",
        "select pgq.tune_storage('nope') a",
        "select pgq.maint_rotate_tables_step1('nope') a",
        "select pgq.seq_getval('pgq.nope') a",
        "select pgq.quote_fqname('a.b') a, pgq.quote_fqname('ab') b,
                pgq.quote_fqname('A.b.c') c, pgq.quote_fqname('\"x\".y') d,
                pgq.quote_fqname('') e",
        "select queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events
           from pgq.get_consumer_info()",
        "select consumer_name from pgq.get_consumer_info('q')",
        "select consumer_name from pgq.get_consumer_info('q', 'b')",
        "select consumer_name from pgq.get_consumer_info('nope')",
        "select pgq.drop_queue('q') a",
        "select pgq.drop_queue('nope') a",
        "select pgq.unregister_consumer('q', 'nope') a, pgq.unregister_consumer('nope', 'a') b",
        "select pgq.unregister_consumer('q', 'c') a, pgq.unregister_consumer('q', 'c') b",
        "select co_name from pgq.consumer order by 1",
        "select pgq.drop_queue('q', true) a",
        "select pgq.drop_queue('q', true) a",
        "select co_name from pgq.consumer order by 1",
        "select relname from pg_class
          where relnamespace = 'pgq'::regnamespace and relname like 'event%' order by 1",
        "select func_name, func_arg from pgq.maint_operations()",
        "select * from pgq.maint_tables_to_vacuum() t",
        "select pgq.upgrade_schema() a",
    ] {
        p.same(sql).await;
    }
    p.same_tables("after queue management").await;
}

#[tokio::test]
async fn producing_ticking_and_consuming() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('q') a").await;
    p.same(
        "select pgq.set_queue_config('q', 'ticker_max_count', '4') a,
                pgq.set_queue_config('q', 'ticker_max_lag', '10') b,
                pgq.set_queue_config('q', 'ticker_idle_period', '60') c",
    )
    .await;
    p.same("select pgq.register_consumer('q', 'a') a, pgq.register_consumer('q', 'b') b")
        .await;

    // A new queue gets its second tick at the first call; then nothing until there is reason.
    p.expect("select pgq.ticker('q') t", r#"[{"t": 2}]"#).await;
    p.expect("select pgq.ticker('q') t", r#"[{"t": null}]"#)
        .await;

    // Produce: single events, all fields, raw inserts with a given id/time/owner/retry.
    p.same("select pgq.insert_event('q', 'single', 'd1') id")
        .await;
    p.same("select pgq.insert_event('q', 'full', 'd2', 'x1', 'x2', 'x3', 'x4') id")
        .await;
    p.same(
        "select pgq.insert_event_raw('q', null, '2001-01-01', null, null, 'raw', 'r1', null,
                                     null, null, null) id",
    )
    .await;
    p.same(
        "select pgq.insert_event_raw('q', 900, '2001-01-01', 77, 2, 'raw', 'r2', 'e1', null,
                                     null, null) id",
    )
    .await;
    p.same("select pgq.current_event_table('q') t").await;
    // Count rule: 4 ids drawn since the newest tick, but the sequence was never used before the
    // first of them, so its value moved by 3 only (max_count 4): no tick yet.
    p.expect("select pgq.ticker('q') t", r#"[{"t": null}]"#)
        .await;
    p.same("select pgq.insert_event('q', 'single', 'd3') id")
        .await;
    p.expect("select pgq.ticker('q') t", r#"[{"t": 3}]"#).await;

    // The set-based insert of pgq_core (pgq_rs.insert_events) and COPY.
    let ids = p
        .call("insert_events", |pool| async move {
            let evs: Vec<NewEvent> = (0..5)
                .map(|i| NewEvent::new("many", format!("m{i}")).extra1(format!("k{i}")))
                .collect();
            pgq_core::insert_events(&pool, &q("q"), &evs).await.unwrap()
        })
        .await;
    assert_eq!(ids.len(), 5);
    let copied = p
        .call("copy_events", |pool| async move {
            let mut conn = pool.acquire().await.unwrap();
            let evs = futures_util::stream::iter((0..3).map(|i| {
                Ok::<_, String>(
                    NewEvent::new("copied", format!("c{i}"))
                        .time("2002-02-02T00:00:00Z".parse().unwrap()),
                )
            }));
            pgq_core::copy_events(&mut conn, &q("q"), evs)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(copied, 3);
    p.same("select pgq.ticker('q') t").await;
    p.same_tables("after producing").await;

    // Batches: the first consumer reads, looks at the batch, retries two events.
    p.same(
        "select batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, prev_tick_event_seq
           from pgq.next_batch_info('q', 'a')",
    )
    .await;
    p.same(
        "select batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, prev_tick_event_seq
           from pgq.next_batch_info('q', 'a')",
    )
    .await;
    let batch = "(select pgq.next_batch('q', 'a'))";
    for sql in [
        format!(
            "select ev_id, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,
                    ev_extra4, ev_time = '2001-01-01' as fixed_time
               from pgq.get_batch_events({batch})"
        ),
        format!("select * from pgq.batch_event_tables({batch}) t"),
        format!(
            "select queue_name, consumer_name, prev_tick_id, tick_id, seq_start, seq_end
               from pgq.get_batch_info({batch})"
        ),
        format!(
            "select pgq.event_retry({batch}, 1, 0) a, pgq.event_retry({batch}, 1, 0) b,
                    pgq.event_retry({batch}, 3::bigint, '2000-01-01'::timestamptz) c"
        ),
        format!("select pgq.event_retry({batch}, 12345, 0) a"),
        "select ev_queue, ev_id, ev_txid, ev_owner, ev_retry, ev_type, ev_data
           from pgq.retry_queue order by ev_id"
            .to_owned(),
        "select queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events
           from pgq.get_consumer_info('q')"
            .to_owned(),
        format!("select pgq.finish_batch({batch}) a"),
        "select pgq.maint_retry_events() a, pgq.maint_retry_events() b".to_owned(),
    ] {
        p.same(&sql).await;
    }
    // The retried events come back to their consumer only, with ev_retry + 1.
    p.same("select pgq.force_tick('q') a").await;
    p.same("select pgq.ticker('q') t").await;
    p.same(
        "select ev_id, ev_retry, ev_data, ev_extra1
           from pgq.get_batch_events((select pgq.next_batch('q', 'a')))",
    )
    .await;
    p.same_tables("after the first consumer's retries").await;

    // The second consumer: a cursor, pgq_rs.event_retry_many (through pgq_core) and
    // batch_retry, then its batches streamed with pgq_core.
    p.same("select pgq.finish_batch(pgq.next_batch('q', 'b')) a")
        .await;
    p.exec(
        "begin;
         select * from pgq.get_batch_cursor(pgq.next_batch('q', 'b'), 'c1', 2);
         close c1;
         commit",
    )
    .await;
    p.same(
        "select pgq.next_batch('q', 'b') b,
                (select count(*) from pgq.get_batch_cursor(pgq.next_batch('q', 'b'), 'cur', 3,
                                                          'ev_type = ''many''')) quick",
    )
    .await;
    let retried = p
        .call("event_retry_many", |pool| async move {
            let b = pgq_core::next_batch(&pool, &q("q"), &c("b"))
                .await
                .unwrap()
                .unwrap();
            let now = chrono::Utc::now();
            pgq_core::event_retry_many(&pool, b, &[(EventId(2), now), (EventId(5), now)])
                .await
                .unwrap()
        })
        .await;
    assert_eq!(retried, 2);
    p.same("select pgq.batch_retry(pgq.next_batch('q', 'b'), 0) a, pgq.batch_retry(pgq.next_batch('q', 'b'), 0) b")
        .await;
    p.same("select pgq.finish_batch(pgq.next_batch('q', 'b')) a")
        .await;
    p.same("select pgq.maint_retry_events() a").await;
    let streamed = p
        .call(
            "stream batches",
            |pool| async move { drain(&pool, "b").await },
        )
        .await;
    assert!(!streamed.is_empty());
    p.same_tables("after the second consumer").await;

    // Ticker rules, with the clock moved instead of waited for.
    p.same("select pgq.ticker('q') t").await; // the ids retried events drew
    p.same("select pgq.insert_event('q', 'late', 'l1') id")
        .await;
    p.expect("select pgq.ticker('q') t", r#"[{"t": null}]"#)
        .await;
    p.age_ticks("q", 15).await;
    p.same("select pgq.ticker('q') lag_rule").await; // events, older than max_lag
    p.expect("select pgq.ticker('q') t", r#"[{"t": null}]"#)
        .await;
    p.age_ticks("q", 15).await;
    p.same("select pgq.ticker('q') no_events").await;
    p.age_ticks("q", 61).await;
    p.same("select pgq.ticker('q') idle_rule").await;
    p.same("select pgq.insert_event('q', 'busy', i::text) id from generate_series(1, 9) i")
        .await;
    p.same("select pgq.ticker('q') count_rule").await;
    p.same("select pgq.insert_event('q', 'busy', i::text) id from generate_series(1, 9) i")
        .await;
    p.same("select pgq.ticker('q') count_rule").await;
    p.age_ticks("q", 11).await;
    p.same("select pgq.ticker('q') busy_queue_rule").await; // no events, two close ticks
    p.age_ticks("q", 11).await;
    p.same("select pgq.ticker('q') quiet").await;
    p.same("select pgq.set_queue_config('q', 'ticker_paused', 'on') a")
        .await;
    p.same("select pgq.ticker('q') paused").await;
    p.same("select pgq.ticker() n").await;
    p.same(
        "select pgq.set_queue_config('q', 'ticker_paused', 'off') a,
                pgq.set_queue_config('q', 'external_ticker', 'on') b",
    )
    .await;
    p.same("select pgq.ticker('q') external").await;
    p.same("select pgq.ticker() n").await;
    p.same(
        "select ev_per_sec is not null as rate, ev_new, last_tick_id
           from pgq.get_queue_info('q')",
    )
    .await;
    p.same_tables("after the ticker rules").await;
}

/// Read and finish every open batch of `consumer` on queue `q` with pgq_core (the batch's SQL,
/// streamed); the events as (id, retry, data).
async fn drain(pool: &PgPool, consumer: &str) -> Vec<(i64, Option<i32>, Option<String>)> {
    let mut out = Vec::new();
    let mut conn = pool.acquire().await.unwrap();
    while let Some(b) = pgq_core::next_batch_info(&mut *conn, &q("q"), &c(consumer))
        .await
        .unwrap()
    {
        let batch: BatchId = b.batch_id;
        let evs: Vec<_> = pgq_core::stream_batch_events(&mut conn, batch, &Default::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        out.extend(evs.into_iter().map(|e| (e.ev_id, e.ev_retry, e.ev_data)));
        pgq_core::finish_batch(&mut *conn, batch).await.unwrap();
    }
    out
}

#[tokio::test]
async fn rotation_with_consumers_behind() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('r') a").await;
    p.same("select pgq.set_queue_config('r', 'rotation_period', '0') a")
        .await;
    p.same("select pgq.register_consumer('r', 'slow') a, pgq.register_consumer('r', 'fast') b")
        .await;
    let status = "select queue_cur_table, queue_switch_step2 is null as pending
                    from pgq.queue where queue_name = 'r'";
    for round in 0..5 {
        p.same(&format!(
            "select pgq.insert_event('r', 'round', '{round}-' || i) id
               from generate_series(1, 3) i"
        ))
        .await;
        p.same("select pgq.force_tick('r') a").await;
        p.same("select pgq.ticker('r') t").await;
        // The fast consumer keeps up; the slow one only every other round.
        p.same("select ev_data from pgq.get_batch_events((select pgq.next_batch('r', 'fast')))")
            .await;
        p.same("select pgq.finish_batch(pgq.next_batch('r', 'fast')) a")
            .await;
        if round % 2 == 1 {
            while p
                .same("select pgq.next_batch('r', 'slow') b")
                .await
                .contains("\"b\": null")
                .eq(&false)
            {
                p.same(
                    "select ev_data, ev_retry
                       from pgq.get_batch_events((select pgq.next_batch('r', 'slow')))",
                )
                .await;
                p.same("select * from pgq.batch_event_tables(pgq.next_batch('r', 'slow')) t")
                    .await;
                p.same("select pgq.finish_batch(pgq.next_batch('r', 'slow')) a")
                    .await;
            }
        }
        p.same("select func_name, func_arg from pgq.maint_operations()")
            .await;
        p.same("select pgq.maint_rotate_tables_step1('r') a").await;
        p.same(status).await;
        p.same("select pgq.maint_rotate_tables_step2() a").await;
        p.same(status).await;
        p.same_tables(&format!("after rotation round {round}"))
            .await;
    }
    // Unregistering the slow consumer frees rotation.
    p.same("select pgq.unregister_consumer('r', 'slow') a")
        .await;
    p.same("select pgq.maint_rotate_tables_step1('r') a").await;
    p.same(status).await;
    p.same_tables("after unregistering the slow consumer").await;
}

#[tokio::test]
async fn custom_batches_on_an_external_ticker() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('x') a").await;
    p.same("select pgq.set_queue_config('x', 'external_ticker', 'on') a")
        .await;
    p.exec(
        "update pgq.tick set tick_time = now() - interval '200 seconds'
          where tick_queue = (select queue_id from pgq.queue where queue_name = 'x')",
    )
    .await;
    p.same("select pgq.register_consumer('x', 'c') a").await;
    p.same(
        "select pgq.ticker('x', 1 + i, now() - interval '200 seconds' + i * interval '10 seconds',
                           1 + i * 10) t
           from generate_series(1, 19) i",
    )
    .await;
    p.same(
        "select pgq.seq_getval('pgq.event_1_id_seq') e, pgq.seq_getval('pgq.event_1_tick_seq') t",
    )
    .await;
    for (lag, count, interval) in [
        ("null", "null", "'25 s'"),
        ("null", "25", "null"),
        ("null", "15", "'50 s'"),
        ("null", "35", "'15 s'"),
        ("'75 s'", "null", "null"),
        ("'75 s'", "5", "null"),
        ("'75 s'", "null", "null"),
        ("'65 s'", "25", "null"),
        ("null", "null", "'65 s'"),
        ("'35 s'", "25", "null"),
        ("null", "1000", "null"),
        ("null", "0", "null"),
        ("null", "null", "null"),
    ] {
        let sql = format!(
            "select batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, prev_tick_event_seq
               from pgq.next_batch_custom('x', 'c', {lag}, {count}, {interval})"
        );
        p.same(&sql).await;
        p.same(&sql).await; // the open batch again, whatever the conditions
        p.same("select pgq.finish_batch(batch_id) a from pgq.next_batch_info('x', 'c')")
            .await;
    }
    p.same(
        "select h.next_tick_id, h.next_tick_seq from pgq.queue q,
                pgq.find_tick_helper(q.queue_id, 1, now() - interval '200 seconds', 1, 25, null) h
          where q.queue_name = 'x'",
    )
    .await;
    p.same(
        "select ev_per_sec is not null as rate, ev_new, last_tick_id
           from pgq.get_queue_info('x')",
    )
    .await;
    p.same_tables("after custom batches").await;
}

#[tokio::test]
async fn cooperative_members_and_unregistering() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('g') a").await;
    p.same(
        "select pgq_coop.register_subconsumer('g', 'grp', 'm1') a,
                pgq_coop.register_subconsumer('g', 'grp', 'm2') b,
                pgq_coop.register_subconsumer('g', 'grp', 'm3') c",
    )
    .await;
    p.same("select pgq.insert_event('g', 't', i::text) id from generate_series(1, 4) i")
        .await;
    p.same("select pgq.force_tick('g') a").await;
    p.same("select pgq.ticker('g') t").await;
    p.same("select pgq_coop.next_batch('g', 'grp', 'm1') b")
        .await;
    p.same(
        "select queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events
           from pgq.get_consumer_info('g')",
    )
    .await;
    p.same_tables("with a member holding a batch").await;
    // pgq's own unregister of a member (holding a batch, or idle) removes that member only; of
    // the group, all of it.
    p.same("select pgq.unregister_consumer('g', 'grp.m1') a")
        .await;
    p.same("select pgq.unregister_consumer('g', 'grp.m2') a")
        .await;
    p.same_tables("after unregistering two members").await;
    p.same("select pgq.unregister_consumer('g', 'grp') a").await;
    p.same("select co_name from pgq.consumer order by 1").await;
    p.same_tables("after unregistering the group").await;
}

/// Registrations sharing a sub_id in every shape: which ones pgq.unregister_consumer removes.
#[tokio::test]
async fn unregistering_registrations_that_share_a_sub_id() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('u') a").await;
    p.same("select pgq.force_tick('u') a").await;
    p.same("select pgq.ticker('u') t").await;
    p.same("select pgq.register_consumer('u', 'plain') a").await;
    p.same("select pgq.next_batch('u', 'plain') b").await;
    p.same("select pgq.event_retry_raw('u', 'plain', now(), 1, now(), 1, 't', 'd', null, null, null, null) a")
        .await;
    // (group, member, member's last tick, next tick, batch)
    for (n, (last, next, batch)) in [
        ("null", "null", "null"),
        ("1", "null", "null"),
        ("1", "2", "901"),
        ("1", "2", "null"),
        ("null", "null", "903"),
        ("1", "null", "904"),
    ]
    .into_iter()
    .enumerate()
    {
        p.same(&format!("select pgq.register_consumer('u', 'g{n}') a"))
            .await;
        p.exec(&format!(
            "insert into pgq.consumer (co_name) values ('g{n}.m');
             insert into pgq.subscription (sub_id, sub_queue, sub_consumer, sub_last_tick,
                                           sub_next_tick, sub_batch)
             select s.sub_id, s.sub_queue, (select co_id from pgq.consumer where co_name = 'g{n}.m'),
                    {last}, {next}, {batch}
               from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
              where c.co_name = 'g{n}'"
        ))
        .await;
        p.same(&format!("select pgq.unregister_consumer('u', 'g{n}.m') a"))
            .await;
        p.same_tables(&format!("after unregistering member shape {n}"))
            .await;
    }
    p.same("select pgq.unregister_consumer('u', 'plain') a")
        .await;
    p.same_tables("after unregistering a consumer holding a batch and retries")
        .await;
}

/// The catalog: the pgq schema's functions (arguments, results, security, volatility,
/// strictness, grants), tables and sequences (columns, types, defaults, constraints, indexes,
/// storage options, inheritance, grants), with a queue's event tables, are pgq 3.5's.
#[tokio::test]
async fn the_pgq_schema_has_the_same_objects() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('shape') a, pgq.create_queue('Other Shape') b")
        .await;
    let grants = |acl: &str, kind: &str, owner: &str| {
        format!(
            "(select coalesce(array_agg(g order by g), '{{}}')
                from (select case when a.grantee = 0 then 'public'
                                  else pg_get_userbyid(a.grantee) end
                             || ':' || a.privilege_type as g
                        from aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) a
                       where a.grantee <> {owner}) x)"
        )
    };
    for sql in [
        format!(
            "select p.proname, pg_get_function_identity_arguments(p.oid) as args,
                    pg_get_function_result(p.oid) as result, p.prosecdef, p.provolatile,
                    p.proisstrict, p.proretset, {} as grants
               from pg_proc p
              where p.pronamespace = 'pgq'::regnamespace
                and p.proname not in ('logutriga', 'jsontriga', 'sqltriga')
              order by 1, 2",
            grants("p.proacl", "'f'", "p.proowner")
        ),
        "select c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) as type,
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid) as default
           from pg_attribute a
           join pg_class c on c.oid = a.attrelid
           left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
          where c.relnamespace = 'pgq'::regnamespace and c.relkind = 'r'
            and a.attnum > 0 and not a.attisdropped
          order by 1, 2"
            .to_owned(),
        "select conrelid::regclass::text as rel, conname, pg_get_constraintdef(oid) as def
           from pg_constraint where connamespace = 'pgq'::regnamespace order by 1, 2"
            .to_owned(),
        "select indexrelid::regclass::text as idx, pg_get_indexdef(indexrelid) as def
           from pg_index i join pg_class c on c.oid = i.indrelid
          where c.relnamespace = 'pgq'::regnamespace order by 1"
            .to_owned(),
        "select sequencename, data_type::text, start_value, min_value, max_value,
                increment_by, cycle, cache_size
           from pg_sequences where schemaname = 'pgq' order by 1"
            .to_owned(),
        "select inhrelid::regclass::text as child, inhparent::regclass::text as parent
           from pg_inherits where inhrelid::regclass::text like 'pgq.%' order by 1"
            .to_owned(),
        format!(
            "select c.relname, c.relkind, c.reloptions, {} as grants,
                    (select t.reloptions from pg_class t where t.oid = c.reltoastrelid)
                      as toast_options
               from pg_class c
              where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('r', 'S')
              order by 1",
            grants(
                "c.relacl",
                "(case when c.relkind = 'S' then 's' else 'r' end)::\"char\"",
                "c.relowner"
            )
        ),
        "select nspname, (select array_agg(g order by g) from (
                   select case when a.grantee = 0 then 'public'
                               else pg_get_userbyid(a.grantee) end || ':' || a.privilege_type g
                     from aclexplode(n.nspacl) a where a.grantee <> n.nspowner) x) as grants
           from pg_namespace n where nspname = 'pgq'"
            .to_owned(),
    ] {
        p.same(&sql).await;
    }
}
