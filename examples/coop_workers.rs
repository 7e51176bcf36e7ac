//! Cooperative workers: several members of one group share the group's position and split its
//! batches. Each member here has a pool of its own, as a separate process would; each handles an
//! event in `--handle-ms` (default 5 ms, standing in for real work).
//!
//! ```sh
//! cargo run --release --example coop_workers                  # 3 members, 400 events
//! cargo run --release --example coop_workers -- --members 4 --events 1000
//! cargo run --release --example coop_workers -- --scaling     # 1, 2 and 4 members side by side
//! ```
//!
//! Uses `DATABASE_URL` when set (the role must be able to install pgq the first time); otherwise
//! starts a private PostgreSQL cluster with `pgq-testkit`. The example ticks the queue itself,
//! as `pgq-ticker` or pgqd would in production.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgq::consumer::{CancellationToken, CoopConsumer, HandlerError, handler_fn};
use pgq::core::sqlx::PgPool;
use pgq::core::sqlx::postgres::PgPoolOptions;
use pgq::core::{self as core, ConsumerName, Event, NewEvent, QueueName};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    members: usize,
    events: u64,
    per_tick: u64,
    handle: Duration,
    scaling: bool,
}

fn options() -> Result<Options, BoxError> {
    let mut o = Options {
        members: 3,
        events: 400,
        per_tick: 10,
        handle: Duration::from_millis(5),
        scaling: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--members" => o.members = value()?.parse()?,
            "--events" => o.events = value()?.parse()?,
            "--per-tick" => o.per_tick = value()?.parse()?,
            "--handle-ms" => o.handle = Duration::from_millis(value()?.parse()?),
            "--scaling" => o.scaling = true,
            _ => {
                return Err(format!(
                    "unknown argument {arg}; use --members N, --events N, --per-tick N, \
                     --handle-ms MS, --scaling"
                )
                .into());
            }
        }
    }
    if o.members == 0 || o.events == 0 || o.per_tick == 0 {
        return Err("--members, --events and --per-tick must be at least 1".into());
    }
    Ok(o)
}

/// One run: `members` members of a fresh group consume `o.events` events already waiting in
/// batches of `o.per_tick`. Returns the time from the members' start to the last event handled.
async fn run_group(
    pool: &PgPool,
    url: &str,
    queue: &QueueName,
    members: usize,
    o: &Options,
) -> Result<Duration, BoxError> {
    let group = ConsumerName::new(format!("workers_{members}_{}", std::process::id()))?;
    let mut consumers = Vec::new();
    for i in 0..members {
        let member_pool = PgPoolOptions::new().max_connections(3).connect(url).await?;
        let member = CoopConsumer::coop_builder(
            member_pool,
            queue.clone(),
            group.clone(),
            ConsumerName::new(format!("w{i}"))?,
        )
        .dead_interval(Duration::from_secs(30)) // take over batches of crashed members
        .build()?;
        member.register().await?; // the first one registers the group at the latest tick
        consumers.push(member);
    }

    // The events wait in `events / per_tick` batches.
    let mut left = o.events;
    while left > 0 {
        let n = left.min(o.per_tick);
        let events: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent::new("job", (o.events - left + i).to_string()))
            .collect();
        core::insert_events(pool, queue, &events).await?;
        core::tick_now(&mut *pool.acquire().await?, queue).await?;
        left -= n;
    }

    let handled = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut runs = Vec::new();
    for member in consumers {
        let (total, mine) = (handled.clone(), Arc::new(AtomicU64::new(0)));
        let count = mine.clone();
        let wait = o.handle;
        let handler = handler_fn(move |_ev: Event| {
            let (total, count) = (total.clone(), count.clone());
            async move {
                tokio::time::sleep(wait).await; // the work
                count.fetch_add(1, Ordering::Relaxed);
                total.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(())
            }
        });
        let stop = shutdown.clone();
        runs.push(tokio::spawn(async move {
            let name = member.member().to_string();
            member.run(handler, stop).await.map(|()| (name, mine))
        }));
    }
    while handled.load(Ordering::Relaxed) < o.events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel(); // each member finishes its batch and leaves the group
    let mut split = Vec::new();
    for run in runs {
        let (name, n) = run.await??;
        split.push(format!("{name}: {}", n.load(Ordering::Relaxed)));
    }
    println!(
        "{members} member(s): {} events in {:.2?} ({:.0} events/s); events per member: {}",
        o.events,
        elapsed,
        o.events as f64 / elapsed.as_secs_f64(),
        split.join(", ")
    );
    core::unregister_consumer(pool, queue, &group).await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = options()?;
    let db = common::database().await?;
    let (pool, url) = (db.pool.clone(), db.url.clone());
    core::install(&pool).await?;
    let queue = QueueName::new("example_jobs")?;
    core::create_queue(&pool, &queue).await?;
    println!(
        "{} events in batches of {}, {:?} of work per event",
        o.events, o.per_tick, o.handle
    );
    if o.scaling {
        let mut base = None;
        for members in [1, 2, 4] {
            let t = run_group(&pool, &url, &queue, members, &o).await?;
            let one = *base.get_or_insert(t);
            println!(
                "  speedup over 1 member: {:.2}x",
                one.as_secs_f64() / t.as_secs_f64()
            );
        }
    } else {
        run_group(&pool, &url, &queue, o.members, &o).await?;
    }
    Ok(())
}
