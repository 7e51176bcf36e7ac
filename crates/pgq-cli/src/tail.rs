//! `pgq tail`: print events as a consumer (or a cooperative member) consumes them.

use std::io::Write;
use std::time::Duration;

use futures_util::TryStreamExt;
use pgq_core::sqlx::PgConnection;
use pgq_core::sqlx::postgres::{PgListener, PgPoolOptions};
use pgq_core::{BatchId, BatchTuning, ConsumerName, Event, QueueName};
use serde::Serialize;

use crate::cli::TailArgs;
use crate::consumer::{not_registered, require_queue};
use crate::error::{CliError, Names};
use crate::interrupt::Interrupt;
use crate::watchdog::{TimedOut, Watchdog};
use crate::{Ctx, conn, out};

/// One event as `tail --json` prints it (and `send --file` reads it back).
#[derive(Serialize)]
struct EventLine<'a> {
    batch_id: i64,
    ev_id: i64,
    time: chrono::DateTime<chrono::Utc>,
    txid: i64,
    retry: Option<i32>,
    #[serde(rename = "type")]
    ev_type: Option<&'a str>,
    data: Option<&'a str>,
    extra1: Option<&'a str>,
    extra2: Option<&'a str>,
    extra3: Option<&'a str>,
    extra4: Option<&'a str>,
}

fn write_event(w: &mut impl Write, json: bool, batch: BatchId, ev: &Event) -> std::io::Result<()> {
    if json {
        let line = EventLine {
            batch_id: batch.get(),
            ev_id: ev.ev_id,
            time: ev.ev_time,
            txid: ev.ev_txid,
            retry: ev.ev_retry,
            ev_type: ev.ev_type.as_deref(),
            data: ev.ev_data.as_deref(),
            extra1: ev.ev_extra1.as_deref(),
            extra2: ev.ev_extra2.as_deref(),
            extra3: ev.ev_extra3.as_deref(),
            extra4: ev.ev_extra4.as_deref(),
        };
        serde_json::to_writer(&mut *w, &line).map_err(std::io::Error::other)?;
        return writeln!(w);
    }
    write!(
        w,
        "{} {} {} {}",
        ev.ev_id,
        ev.ev_time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        out::one_line(ev.ev_type.as_deref().unwrap_or("-")),
        out::one_line(ev.ev_data.as_deref().unwrap_or("-"))
    )?;
    for (name, v) in [
        ("extra1", &ev.ev_extra1),
        ("extra2", &ev.ev_extra2),
        ("extra3", &ev.ev_extra3),
        ("extra4", &ev.ev_extra4),
    ] {
        if let Some(v) = v {
            write!(w, " {name}={}", out::one_line(v))?;
        }
    }
    if let Some(r) = ev.ev_retry {
        write!(w, " retry={r}")?;
    }
    writeln!(w)
}

/// Who consumes: a plain consumer, or a member of a cooperative group.
enum Who {
    Consumer(ConsumerName),
    Member {
        group: ConsumerName,
        member: ConsumerName,
    },
}

impl Who {
    async fn next_batch(
        &self,
        db: &mut PgConnection,
        q: &QueueName,
    ) -> Result<Option<BatchId>, CliError> {
        match self {
            Who::Consumer(c) => Ok(pgq_core::next_batch(&mut *db, q, c).await.consumer(q, c)?),
            Who::Member { group, member } => Ok(pgq_core::coop_next_batch(
                &mut *db,
                q,
                group,
                member,
                BatchTuning::default(),
                None,
            )
            .await
            .consumer(q, group)?),
        }
    }

    async fn finish(&self, db: &mut PgConnection, batch: BatchId) -> Result<(), CliError> {
        match self {
            Who::Consumer(_) => pgq_core::finish_batch(&mut *db, batch).await?,
            Who::Member { .. } => pgq_core::coop_finish_batch(&mut *db, batch).await?,
        }
        Ok(())
    }
}

/// How `--follow` waits for the next tick: a LISTEN on the tick channel when the wakeup trigger is
/// installed, with polling as the fallback.
struct Waiter {
    listener: Option<PgListener>,
    poll: Duration,
    interrupt: Interrupt,
}

impl Waiter {
    async fn new(ctx: &Ctx, db: &mut PgConnection, poll: Duration) -> Result<Waiter, CliError> {
        let listener = if pgq_core::tick_trigger_installed(&mut *db).await? {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(ctx.target.options().clone());
            Some(pgq_core::tick_listener(&pool).await?)
        } else {
            None
        };
        Ok(Waiter {
            listener,
            poll,
            interrupt: Interrupt::install(),
        })
    }

    /// Wait for a tick of `queue` or the poll interval; `false` when interrupted.
    async fn wait(&mut self, queue: &QueueName) -> bool {
        let deadline = tokio::time::Instant::now() + self.poll;
        let listener = &mut self.listener;
        let interrupt = &self.interrupt;
        loop {
            let tick = async {
                match listener.as_mut() {
                    Some(l) => match l.try_recv().await {
                        // A missed notification is covered by the poll.
                        Ok(Some(n)) => pgq_core::is_tick_of(&n, queue),
                        Ok(None) => true,
                        Err(_) => {
                            tokio::time::sleep_until(deadline).await;
                            true
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                woke = tick => if woke { return true },
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = interrupt.wait() => return false,
            }
        }
    }
}

fn interrupted(waiter: &Option<Waiter>) -> bool {
    waiter.as_ref().is_some_and(|w| w.interrupt.is_set())
}

/// Run `pgq tail`.
pub(crate) async fn run(ctx: &Ctx, args: TailArgs) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    // Every wait for the database is bounded (--db-timeout).
    let watchdog = Watchdog::new(args.db_timeout);
    match watchdog.guard(tail(ctx, &mut db, args, &watchdog)).await {
        Ok(()) => {
            conn::close(db).await;
            Ok(())
        }
        Err(TimedOut::No(e)) => {
            conn::close(db).await;
            Err(e)
        }
        // Dead: drop it (closing the socket) without a goodbye that could wait too.
        Err(TimedOut::Yes(e)) => Err(e),
    }
}

async fn tail(
    ctx: &Ctx,
    db: &mut PgConnection,
    args: TailArgs,
    watchdog: &Watchdog,
) -> Result<(), CliError> {
    let queue = args.queue;
    require_queue(db, &queue).await?;
    let who = match args.subconsumer {
        Some(member) => {
            match pgq_core::coop_flavor(&mut *db).await? {
                Some(f) if f.is_ours() => {}
                None => {
                    return Err(CliError::Refused(
                        "cooperative consumers need the pgq_coop schema: run `pgq install`"
                            .to_owned(),
                    ));
                }
                Some(f) => {
                    return Err(CliError::Refused(format!(
                        "cooperative consumers need the pgq_coop schema that `pgq install` \
                         creates; pgq_coop: {}",
                        crate::status::coop_line(Some(&f))
                    )));
                }
            }
            pgq_core::coop_register_member(&mut *db, &queue, &args.consumer, &member)
                .await
                .consumer(&queue, &args.consumer)?;
            Who::Member {
                group: args.consumer,
                member,
            }
        }
        None => {
            if pgq_core::get_consumer_info(&mut *db, &queue, &args.consumer)
                .await?
                .is_none()
            {
                return Err(not_registered(&queue, &args.consumer));
            }
            Who::Consumer(args.consumer)
        }
    };
    let mut waiter = if args.follow {
        Some(Waiter::new(ctx, db, args.poll_interval).await?)
    } else {
        None
    };
    let mut printed: u64 = 0;
    let limit = args.max_events.unwrap_or(u64::MAX);
    let io = |e| CliError::io("writing to standard output", e);
    loop {
        let Some(batch) = who.next_batch(db, &queue).await? else {
            let go_on = match waiter.as_mut() {
                Some(w) => watchdog.idle(w.wait(&queue)).await,
                None => false,
            };
            if go_on {
                continue;
            }
            return Ok(());
        };
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let mut complete = true;
        // Events of this batch printed, and (when --max-events stops inside it) not printed.
        let mut in_batch: u64 = 0;
        let mut left: u64 = 0;
        {
            let mut events =
                pgq_core::stream_batch_events(&mut *db, batch, &Default::default()).await?;
            while let Some(ev) = events.try_next().await? {
                if interrupted(&waiter) {
                    complete = false;
                    break;
                }
                if printed >= limit && !args.finish_batch {
                    // Count what is left (bounded memory: the rows stream by), to say how to
                    // move on.
                    complete = false;
                    left = 1;
                    while events.try_next().await?.is_some() {
                        watchdog.progress();
                        left += 1;
                    }
                    break;
                }
                write_event(&mut stdout, ctx.json, batch, &ev).map_err(io)?;
                watchdog.progress();
                printed += 1;
                in_batch += 1;
            }
        }
        stdout.flush().map_err(io)?;
        drop(stdout);
        if !complete {
            if left > 0 {
                eprintln!(
                    "stopped by --max-events {limit} inside batch {batch}: printed {in_batch} of \
                     its {} events, {left} not printed. The batch stays unfinished (nothing is \
                     lost), so the next `pgq tail` starts it again from its first event. To move \
                     on, run again with --finish-batch (prints to the end of the batch, then \
                     finishes it) or with --max-events {} or more.",
                    in_batch + left,
                    in_batch + left
                );
            } else {
                eprintln!(
                    "interrupted after {in_batch} events of batch {batch}: the batch was not \
                     finished, so all of its events will be delivered again"
                );
            }
            return Ok(());
        }
        who.finish(db, batch).await?;
        if printed >= limit || interrupted(&waiter) {
            return Ok(());
        }
    }
}
