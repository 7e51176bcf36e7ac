//! `pgq consumer ...`.

use pgq_core::sqlx::PgConnection;
use pgq_core::{QueueName, TickId};
use serde::Serialize;

use crate::cli::ConsumerCmd;
use crate::error::{CliError, Names, sh};
use crate::out::{self, ConsumerView};
use crate::{Ctx, conn};

#[derive(Serialize)]
struct Done<'a> {
    queue_name: &'a str,
    consumer_name: &'a str,
    action: &'a str,
    changed: bool,
    last_tick_id: Option<i64>,
}

/// Run a `pgq consumer` command.
pub(crate) async fn run(ctx: &Ctx, cmd: ConsumerCmd) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let result = run_on(ctx, &mut db, cmd).await;
    conn::close(db).await;
    result
}

/// Fail unless `queue` exists.
pub(crate) async fn require_queue(
    db: &mut PgConnection,
    queue: &QueueName,
) -> Result<(), CliError> {
    pgq_core::require_queue(&mut *db, queue).await.queue(queue)
}

async fn run_on(ctx: &Ctx, db: &mut PgConnection, cmd: ConsumerCmd) -> Result<(), CliError> {
    match cmd {
        ConsumerCmd::Register {
            queue,
            name,
            at_tick,
            copy_from,
        } => {
            require_queue(db, &queue).await?;
            let tick = match (&copy_from, at_tick) {
                (Some(other), _) => {
                    let info = pgq_core::require_consumer_info(&mut *db, &queue, other)
                        .await
                        .consumer(&queue, other)?;
                    Some(info.last_tick.ok_or_else(|| {
                        CliError::Refused(format!(
                            "consumer {other:?} has no position of its own to copy (it is an idle \
                             cooperative member): copy its group instead"
                        ))
                    })?)
                }
                (None, Some(t)) => Some(TickId(t)),
                (None, None) => None,
            };
            let created = match tick {
                Some(t) => pgq_core::register_consumer_at(&mut *db, &queue, &name, t).await,
                // Atomic: two `pgq consumer register` at once register it once, no error.
                None => pgq_core::register_consumer_if_new(&mut *db, &queue, &name, None).await,
            }
            .consumer(&queue, &name)?;
            let info = pgq_core::get_consumer_info(&mut *db, &queue, &name).await?;
            let last_tick = info.and_then(|i| i.last_tick);
            let action = if created {
                "registered"
            } else if tick.is_some() {
                "moved"
            } else {
                "already registered"
            };
            if ctx.json {
                return out::json(&Done {
                    queue_name: queue.as_str(),
                    consumer_name: name.as_str(),
                    action: "register",
                    changed: created || tick.is_some(),
                    last_tick_id: last_tick.map(|t| t.get()),
                });
            }
            out::line(format!(
                "{action} consumer {name:?} on queue {queue:?} (position: tick {})",
                out::opt(last_tick)
            ))
        }
        ConsumerCmd::Unregister { queue, name } => {
            require_queue(db, &queue).await?;
            let n = pgq_core::unregister_consumer(&mut *db, &queue, &name)
                .await
                .consumer(&queue, &name)?;
            if n == 0 {
                return Err(pgq_core::Error::consumer_not_registered()).consumer(&queue, &name);
            }
            if ctx.json {
                return out::json(&Done {
                    queue_name: queue.as_str(),
                    consumer_name: name.as_str(),
                    action: "unregister",
                    changed: true,
                    last_tick_id: None,
                });
            }
            out::line(format!(
                "unregistered consumer {name:?} from queue {queue:?}"
            ))
        }
        ConsumerCmd::List { queue } => {
            let infos = match &queue {
                Some(q) => {
                    require_queue(db, q).await?;
                    pgq_core::get_consumer_info_queue(&mut *db, q).await?
                }
                None => pgq_core::get_consumer_info_all(&mut *db).await?,
            };
            let retries = pgq_core::retry_queue_counts(&mut *db).await?;
            let views = ConsumerView::group(&infos, &retries);
            if ctx.json {
                return out::json(&views);
            }
            if views.is_empty() {
                return out::line(match &queue {
                    Some(q) => format!(
                        "no consumers on queue {q:?}: register one with `pgq consumer register {} NAME`",
                        sh(q.as_str())
                    ),
                    None => "no consumers: register one with `pgq consumer register QUEUE NAME`"
                        .to_owned(),
                });
            }
            let mut t = out::table(ConsumerView::headers(true));
            for v in &views {
                v.add_rows(&mut t, true);
            }
            out::print_table(&t)
        }
    }
}
