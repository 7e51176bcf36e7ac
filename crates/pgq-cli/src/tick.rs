//! `pgq tick [QUEUE]` and `pgq maint`.

use pgq_core::QueueName;
use serde::Serialize;

use crate::error::{CliError, Names, sh};
use crate::{Ctx, conn, out};

#[derive(Serialize)]
struct TickReport<'a> {
    queue_name: Option<&'a str>,
    tick_id: Option<i64>,
    queues_processed: Option<i64>,
}

/// One ticker round, or (with `queue`) tick that queue now.
pub(crate) async fn tick(ctx: &Ctx, queue: Option<QueueName>) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let result = match &queue {
        Some(q) => pgq_core::tick_now(&mut db, q)
            .await
            .queue(q)
            .map(|t| (t, None)),
        None => pgq_core::ticker(&mut db)
            .await
            .map(|n| (None, Some(n)))
            .map_err(CliError::from),
    };
    conn::close(db).await;
    let (tick_id, processed) = result?;
    if let Some(q) = &queue
        && tick_id.is_none()
    {
        return Err(CliError::Refused(format!(
            "queue {q:?} was not ticked: its ticker is paused (`pgq queue resume {}`) or external \
             (`pgq queue config {} external_ticker=false`)",
            sh(q.as_str()),
            sh(q.as_str())
        )));
    }
    if ctx.json {
        return out::json(&TickReport {
            queue_name: queue.as_ref().map(QueueName::as_str),
            tick_id: tick_id.map(|t| t.get()),
            queues_processed: processed,
        });
    }
    match (&queue, tick_id, processed) {
        (Some(q), Some(t), _) => out::line(format!("ticked queue {q:?}: tick {t}")),
        (_, _, n) => out::line(format!(
            "ticker round done: {} queue(s) processed",
            n.unwrap_or(0)
        )),
    }
}

#[derive(Serialize)]
struct OpReport {
    func_name: String,
    func_arg: Option<String>,
    calls: u32,
}

#[derive(Serialize)]
struct MaintReport {
    operations: Vec<OpReport>,
    retry_events_moved: i64,
}

/// How often one maintenance operation is repeated at most while it reports work.
const MAX_REPEAT: u32 = 1000;

/// One maintenance round: every operation pgq asks for, then the retry mover.
pub(crate) async fn maint(ctx: &Ctx) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let result = async {
        let ops = pgq_core::maint_operations(&mut db).await?;
        let mut reports = Vec::with_capacity(ops.len());
        for op in ops {
            // Each call is its own transaction (autocommit): rotation step 1 and step 2 must
            // never share one.
            let mut calls = 0;
            loop {
                calls += 1;
                let r = pgq_core::run_maint_operation(&mut db, &op).await?;
                if r == 0 || calls >= MAX_REPEAT {
                    break;
                }
            }
            reports.push(OpReport {
                func_name: op.func_name,
                func_arg: op.func_arg,
                calls,
            });
        }
        let moved = pgq_core::maint_retry_events_all(&mut db).await?;
        Ok::<_, CliError>(MaintReport {
            operations: reports,
            retry_events_moved: moved,
        })
    }
    .await;
    conn::close(db).await;
    let report = result?;
    if ctx.json {
        return out::json(&report);
    }
    if report.operations.is_empty() {
        out::line("no maintenance operations were due")?;
    } else {
        let mut t = out::table(["operation", "argument", "calls"]);
        for op in &report.operations {
            t.add_row([
                op.func_name.clone(),
                op.func_arg.clone().unwrap_or_default(),
                op.calls.to_string(),
            ]);
        }
        out::print_table(&t)?;
    }
    out::line(format!(
        "retry events moved back into their queues: {}",
        report.retry_events_moved
    ))
}
