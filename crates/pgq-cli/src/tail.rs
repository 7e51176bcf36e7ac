//! `pgq tail`: print events as a consumer (or a cooperative member) consumes them.

use std::io::Write;
use std::time::Duration;

use futures_util::TryStreamExt;
use pgq_core::sqlx::PgConnection;
use pgq_core::{
    BatchId, BatchTaker, BatchTuning, ConsumerName, Event, ListenVia, QueueName, TickWakeups,
    WakeupSettings,
};
use serde::Serialize;

use crate::cli::TailArgs;
use crate::consumer::require_queue;
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

/// Who consumes ([`BatchTaker`]), with the queue and consumer named in errors.
struct Who {
    taker: BatchTaker,
    /// The consumer (the group, for a member).
    consumer: ConsumerName,
}

impl Who {
    async fn next_batch(&self, db: &mut PgConnection) -> Result<Option<BatchId>, CliError> {
        let batch = self
            .taker
            .next_batch(db, BatchTuning::default())
            .await
            .consumer(self.taker.queue(), &self.consumer)?;
        Ok(batch.map(|b| b.batch_id))
    }

    async fn finish(&self, db: &mut PgConnection, batch: BatchId) -> Result<(), CliError> {
        Ok(self.taker.finish_batch(db, batch).await?)
    }
}

/// How `--follow` waits for the next tick: core's [`TickWakeups`] (a LISTEN on the tick channel
/// that reconnects by itself, to whichever host is the one to use now) when the wakeup trigger is
/// installed, with polling as the fallback; and Ctrl-C.
struct Waiter {
    wakeups: TickWakeups,
    poll: Duration,
    interrupt: Interrupt,
}

impl Waiter {
    async fn new(
        ctx: &Ctx,
        db: &mut PgConnection,
        queue: &QueueName,
        poll: Duration,
        db_timeout: Duration,
    ) -> Result<Waiter, CliError> {
        let wakeups = if pgq_core::tick_trigger_installed(&mut *db).await? {
            TickWakeups::start(
                ListenVia::Target(ctx.target.connect_target().clone()),
                queue.clone(),
                // Someone watches: listen again soon after a server is back.
                WakeupSettings::new(db_timeout).backoff(|failures| {
                    (RECONNECT_PAUSE.0 * 2u32.saturating_pow(failures)).min(LISTEN_PAUSE_MAX)
                }),
            )
        } else {
            TickWakeups::polling()
        };
        Ok(Waiter {
            wakeups,
            poll,
            interrupt: Interrupt::install(),
        })
    }

    /// Wait for a tick of the queue or the poll interval; `false` when interrupted.
    async fn wait(&self) -> bool {
        tokio::select! {
            _ = self.wakeups.wait(self.poll) => true,
            _ = self.interrupt.wait() => false,
        }
    }

    /// Wait `pause`; `false` when interrupted.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = self.interrupt.wait() => false,
        }
    }
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
            Who {
                taker: BatchTaker::member(queue.clone(), args.consumer.clone(), member),
                consumer: args.consumer,
            }
        }
        None => {
            pgq_core::require_consumer_info(&mut *db, &queue, &args.consumer)
                .await
                .consumer(&queue, &args.consumer)?;
            Who {
                taker: BatchTaker::consumer(queue.clone(), args.consumer.clone()),
                consumer: args.consumer,
            }
        }
    };
    let waiter = if args.follow {
        Some(Waiter::new(ctx, db, &queue, args.poll_interval, args.db_timeout).await?)
    } else {
        None
    };
    let mut run = Run {
        ctx,
        who: &who,
        waiter: waiter.as_ref(),
        watchdog,
        printed: 0,
        limit: args.max_events.unwrap_or(u64::MAX),
        finish_batch: args.finish_batch,
    };
    let Some(waiter) = waiter.as_ref() else {
        return run.batches(db).await;
    };
    // --follow: a lost connection (the server restarted, a failover) is not the end; connect
    // again, with backoff, to whichever host is the one to use now, and go on from the
    // consumer's position there (a batch left unfinished is printed again from its start).
    loop {
        let lost = match run.batches(db).await {
            Err(CliError::Pgq { source, .. }) if source.is_transient() => source,
            other => return other,
        };
        eprintln!(
            "lost the connection to the database ({}); reconnecting",
            conn::redact(&lost.to_string())
        );
        let mut pause = RECONNECT_PAUSE.0;
        *db = loop {
            if !watchdog.idle(waiter.pause(pause)).await {
                return Ok(());
            }
            pause = (pause * 2).min(RECONNECT_PAUSE.1);
            // Waiting for a server to come back is not waiting for an answer: not the watchdog's.
            let connected = tokio::select! {
                c = watchdog.idle(ctx.connect()) => c,
                _ = waiter.interrupt.wait() => return Ok(()),
            };
            // A failed attempt says nothing more (it repeats until a server is back); the
            // settings were checked by the first connect.
            if let Ok(c) = connected {
                break c;
            }
        };
        eprintln!("reconnected; going on from the consumer's position");
    }
}

/// The pause before a reconnect of `tail --follow`: the first, and the longest.
const RECONNECT_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The longest pause before the tick listener of `tail --follow` tries again.
const LISTEN_PAUSE_MAX: Duration = Duration::from_secs(2);

/// One `pgq tail` run over a connection: what stays when the connection is replaced.
struct Run<'a> {
    ctx: &'a Ctx,
    who: &'a Who,
    waiter: Option<&'a Waiter>,
    watchdog: &'a Watchdog,
    printed: u64,
    limit: u64,
    finish_batch: bool,
}

impl Run<'_> {
    fn interrupted(&self) -> bool {
        self.waiter.is_some_and(|w| w.interrupt.is_set())
    }

    /// Print batches until done (no batch left without --follow, --max-events reached,
    /// interrupted), or an error.
    async fn batches(&mut self, db: &mut PgConnection) -> Result<(), CliError> {
        let (watchdog, limit) = (self.watchdog, self.limit);
        let io = |e| CliError::io("writing to standard output", e);
        loop {
            let Some(batch) = self.who.next_batch(db).await? else {
                let go_on = match self.waiter {
                    Some(w) => watchdog.idle(w.wait()).await,
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
                    if self.interrupted() {
                        complete = false;
                        break;
                    }
                    if self.printed >= limit && !self.finish_batch {
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
                    write_event(&mut stdout, self.ctx.json, batch, &ev).map_err(io)?;
                    watchdog.progress();
                    self.printed += 1;
                    in_batch += 1;
                }
            }
            stdout.flush().map_err(io)?;
            drop(stdout);
            if !complete {
                if left > 0 {
                    eprintln!(
                        "stopped by --max-events {limit} inside batch {batch}: printed {in_batch} \
                         of its {} events, {left} not printed. The batch stays unfinished \
                         (nothing is lost), so the next `pgq tail` starts it again from its first \
                         event. To move on, run again with --finish-batch (prints to the end of \
                         the batch, then finishes it) or with --max-events {} or more.",
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
            self.who.finish(db, batch).await?;
            if self.printed >= limit || self.interrupted() {
                return Ok(());
            }
        }
    }
}
