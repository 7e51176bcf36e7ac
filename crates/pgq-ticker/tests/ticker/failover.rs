//! Failover: a primary and a streaming standby behind one connection string with several hosts
//! and `target_session_attrs=read-write`. The primary stops, the standby is promoted: the ticker
//! and a consumer run loop go on on the new primary within 5 s of the promotion, and every event
//! committed there is delivered. (`pgq tail --follow` through the same failover: the CLI's test
//! tree, `failover.rs`.)

use std::time::Duration;

use pgq_consumer::{CancellationToken, Consumer, handler_fn};
use pgq_core::connect::ConnectTarget;
use pgq_core::sqlx::postgres::PgPoolOptions;
use pgq_testkit::{
    Arrivals, Cluster, DEADLINE, Failover, TestDb, TickerProc, c, numbered_events, q,
};
use sqlx::Connection as _;

/// What the issue promises: service on the new primary within this long after the promotion.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);

/// The highest tick id of `queue` on the server at `url` (`None`: not reachable).
async fn last_tick(url: &str, queue: &str) -> Option<i64> {
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let id: Option<i64> = sqlx::query_scalar(
        "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1",
    )
    .bind(queue)
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticker_and_consumer_follow_a_failover() {
    let fo = Failover::start(q("fo_q"), c("fo_c")).await;
    let (db, queue, consumer, both) = (&fo.db, &fo.queue, &fo.consumer, &fo.both);

    let ticker = TickerProc::spawn(
        env!("CARGO_BIN_EXE_pgq-ticker"),
        &["--db", both, "--ticker-period", "100ms"],
    );
    let target = ConnectTarget::parse(both)
        .unwrap()
        .with_default_application_name("failover-consumer");
    let pool = target
        .pool(PgPoolOptions::new().max_connections(4))
        .await
        .unwrap();
    // When the handler first saw each event.
    let seen = Arrivals::default();
    let sink = seen.clone();
    let run_loop = Consumer::builder(pool.clone(), queue.clone(), consumer.clone())
        // Longer than the whole failover: the tick listener, not polling, must wake the loop.
        .poll_interval(Duration::from_secs(60))
        .database_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move {
            run_loop
                .run(
                    handler_fn(move |ev| {
                        let sink = sink.clone();
                        async move {
                            if let Some(d) = ev.ev_data {
                                sink.record(d);
                            }
                            Ok(())
                        }
                    }),
                    stop,
                )
                .await
        }
    });

    // Before: events on the primary reach the run loop.
    let events = |prefix: &str| numbered_events("fo", prefix, 20);
    seen.send_and_wait(
        db.pool(),
        queue,
        "before",
        20,
        "events on the primary were not consumed",
        || ticker.logs(),
    )
    .await;

    // Failover: the primary goes away (no shutdown checkpoint), the standby is promoted.
    let promoted = fo.fail_over().await;
    let new_primary = fo.standby_url();
    let tick_at_promotion = last_tick(&new_primary, queue.as_str()).await.unwrap_or(0);
    let mut conn = sqlx::PgConnection::connect(&new_primary).await.unwrap();
    pgq_core::insert_events(&mut conn, queue, &events("after"))
        .await
        .unwrap();
    let committed = promoted.elapsed();

    // The ticker ticks on the new primary; the run loop gets every event committed there.
    let mut ticked = None;
    let after = seen.watch("after", 20);
    let delivered_at = loop {
        if ticked.is_none()
            && last_tick(&new_primary, queue.as_str())
                .await
                .is_some_and(|t| t > tick_at_promotion)
        {
            ticked = Some(promoted.elapsed());
        }
        if let Some(at) = after() {
            break at;
        }
        if promoted.elapsed() > DEADLINE {
            panic!(
                "after the failover: ticked {ticked:?}, {} events seen (of 40)\n{}",
                seen.len(),
                ticker.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ticked = ticked.unwrap_or_else(|| promoted.elapsed());
    let delivery = delivered_at.duration_since(promoted);
    eprintln!(
        "failover: events committed {:.2}s after the promotion; first tick on the new primary \
         {:.2}s, all of them consumed {:.2}s after the promotion",
        committed.as_secs_f64(),
        ticked.as_secs_f64(),
        delivery.as_secs_f64()
    );
    assert!(
        ticked <= FAILOVER_BUDGET,
        "the ticker took {ticked:?} to tick on the new primary\n{}",
        ticker.logs()
    );
    assert!(
        delivery <= FAILOVER_BUDGET,
        "the run loop took {delivery:?} to deliver the events committed on the new primary"
    );

    stop.cancel();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("the run loop stops")
        .unwrap()
        .expect("the run loop ends cleanly");
    pool.close().await;
    let _ = conn.close().await;
}

/// Set `default_transaction_read_only` cluster-wide (from a session that stays writable) and
/// wait until new sessions see it.
async fn set_read_only(admin: &mut sqlx::PgConnection, url: &str, on: bool) {
    let sql = if on {
        "alter system set default_transaction_read_only = on"
    } else {
        "alter system reset default_transaction_read_only"
    };
    sqlx::query(sql).execute(&mut *admin).await.unwrap();
    sqlx::query("select pg_reload_conf()")
        .execute(&mut *admin)
        .await
        .unwrap();
    let want = if on { "on" } else { "off" };
    pgq_testkit::eventually("the setting reaches new sessions", || async {
        let mut c = sqlx::PgConnection::connect(url).await.ok()?;
        let v: String = sqlx::query_scalar("show default_transaction_read_only")
            .fetch_one(&mut c)
            .await
            .ok()?;
        let _ = c.close().await;
        (v == want).then_some(())
    })
    .await;
}

/// The pool's check before handing out a connection: a pooled connection to a server that no
/// longer accepts writes is discarded, not handed to a `read-write` pool's user.
#[tokio::test]
async fn a_read_write_pool_hands_out_no_connection_to_a_read_only_server() {
    let cluster = Cluster::start_private().expect("a private cluster");
    let db = TestDb::new_on(&cluster).await;
    let target = ConnectTarget::parse(&format!(
        "host=127.0.0.1 port={} dbname={} user=postgres target_session_attrs=read-write",
        cluster.port(),
        db.name()
    ))
    .unwrap();
    let pool = target
        .pool(
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let before: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("set default_transaction_read_only = off")
        .execute(&mut admin)
        .await
        .unwrap();
    set_read_only(&mut admin, &db.url(), true).await;
    // The pooled session is alive, but its server is read-only now.
    match pool.acquire().await {
        Err(e) => eprintln!("no connection from the read-write pool: {e}"),
        Ok(mut conn) => {
            let ro: String = sqlx::query_scalar("show transaction_read_only")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            panic!("a read-write pool handed out a connection with transaction_read_only={ro}");
        }
    }
    set_read_only(&mut admin, &db.url(), false).await;
    let after: i32 = pgq_testkit::eventually("the pool works again", || async {
        sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .ok()
    })
    .await;
    assert_ne!(before, after, "the read-only session was discarded");
    pool.close().await;
    let _ = admin.close().await;
}
