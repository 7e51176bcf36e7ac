//! `pgq status [--watch]`.

use std::io::IsTerminal;
use std::time::Duration;

use pgq_core::sqlx::PgConnection;
use serde::Serialize;

use crate::error::{CliError, sh};
use crate::interrupt::Interrupt;
use crate::out::{self, ConsumerView, QueueView};
use crate::queue::queue_table;
use crate::{Ctx, conn};

/// Something a person must see.
#[derive(Debug, Clone, Serialize)]
struct Warning {
    /// `no_ticker`, `no_ticks`, `queue_paused`, `rotation_held_back`, `schema_outdated`,
    /// `pgq_not_installed`.
    kind: &'static str,
    queue_name: Option<String>,
    consumer_name: Option<String>,
    message: String,
}

#[derive(Debug, Serialize)]
struct Status {
    pgq_version: Option<String>,
    schema_version: Option<i64>,
    ticker_alive: Option<bool>,
    queues: Vec<QueueView>,
    consumers: Vec<ConsumerView>,
    warnings: Vec<Warning>,
}

fn warn(kind: &'static str, q: Option<&str>, c: Option<&str>, message: String) -> Warning {
    Warning {
        kind,
        queue_name: q.map(str::to_owned),
        consumer_name: c.map(str::to_owned),
        message,
    }
}

async fn gather(db: &mut PgConnection) -> Result<Status, CliError> {
    let check = pgq_core::check(&mut *db).await?;
    let mut warnings = Vec::new();
    if check.pgq_version.is_none() {
        warnings.push(warn(
            "pgq_not_installed",
            None,
            None,
            "pgq is not installed in this database: run `pgq install`".to_owned(),
        ));
        return Ok(Status {
            pgq_version: None,
            schema_version: check.schema_version,
            ticker_alive: None,
            queues: Vec::new(),
            consumers: Vec::new(),
            warnings,
        });
    }
    if check
        .schema_version
        .is_none_or(|v| v < check.latest_schema_version)
    {
        warnings.push(warn(
            "schema_outdated",
            None,
            None,
            format!(
                "this project's schema is at version {} but this build has {}: run `pgq install`",
                out::opt(check.schema_version),
                check.latest_schema_version
            ),
        ));
    }
    let queues = pgq_core::get_queue_info_all(&mut *db).await?;
    let consumers = pgq_core::get_consumer_info_all(&mut *db).await?;
    let retries = pgq_core::retry_queue_counts(&mut *db).await?;
    let blockers = pgq_core::rotation_blockers(&mut *db).await?;
    if check.ticker_alive == Some(false) {
        let newest = check.queues.iter().filter_map(|q| q.age).min();
        warnings.push(warn(
            "no_ticker",
            None,
            None,
            format!(
                "no ticker is running (newest tick: {}): start pgq-ticker or pgqd, or tick by \
                 hand with `pgq tick`",
                newest.map_or("none".to_owned(), |a| format!("{} ago", out::dur(a)))
            ),
        ));
    }
    let views = QueueView::all(&queues, &consumers);
    for v in &views {
        let q = v.queue_name.as_str();
        if v.ticker_paused {
            warnings.push(warn(
                "queue_paused",
                Some(q),
                None,
                format!(
                    "queue {q:?} is paused: consumers get no new batches until `pgq queue resume {}`",
                    sh(q)
                ),
            ));
        } else if v.last_tick_id.is_none() && !v.external_ticker {
            warnings.push(warn(
                "no_ticks",
                Some(q),
                None,
                format!(
                    "queue {q:?} has no ticks yet: is pgq-ticker running? (`pgq tick {}` ticks it once)",
                    sh(q)
                ),
            ));
        }
    }
    for b in &blockers {
        warnings.push(warn(
            "rotation_held_back",
            Some(&b.queue_name),
            Some(&b.consumer_name),
            format!(
                "consumer {:?} holds back table rotation of queue {:?} (its position is tick {} \
                 from {}; rotation overdue by {}): let it catch up, or unregister it with `pgq \
                 consumer unregister {} {}`",
                b.consumer_name,
                b.queue_name,
                b.last_tick_id,
                out::time(b.last_tick_time),
                out::dur(b.overdue),
                sh(&b.queue_name),
                sh(&b.consumer_name)
            ),
        ));
    }
    Ok(Status {
        pgq_version: check.pgq_version,
        schema_version: check.schema_version,
        ticker_alive: check.ticker_alive,
        queues: views,
        consumers: ConsumerView::group(&consumers, &retries),
        warnings,
    })
}

fn print(ctx: &Ctx, s: &Status) -> Result<(), CliError> {
    if ctx.json {
        return out::json(s);
    }
    out::line(format!(
        "pgq {}, schema {}, ticker {}",
        out::opt(s.pgq_version.as_deref()),
        out::opt(s.schema_version),
        match s.ticker_alive {
            Some(true) => "alive",
            Some(false) => "NOT RUNNING",
            None => "unknown",
        }
    ))?;
    if s.queues.is_empty() {
        out::line("no queues: create one with `pgq queue create NAME`")?;
    } else {
        out::print_table(&queue_table(&s.queues))?;
    }
    if !s.consumers.is_empty() {
        out::line("")?;
        let mut t = out::table(ConsumerView::headers(true));
        for c in &s.consumers {
            c.add_rows(&mut t, true);
        }
        out::print_table(&t)?;
    }
    for w in &s.warnings {
        out::line(format!("WARNING: {}", w.message))?;
    }
    Ok(())
}

/// Show the status once, or every `watch` until interrupted. With `check`, warnings make it
/// fail ([`CliError::Warnings`], exit status 3) after printing.
pub(crate) async fn run(ctx: &Ctx, watch: Option<Duration>, check: bool) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let Some(every) = watch else {
        let result = gather(&mut db).await;
        conn::close(db).await;
        let status = result?;
        print(ctx, &status)?;
        if check && !status.warnings.is_empty() {
            return Err(CliError::Warnings(status.warnings.len()));
        }
        return Ok(());
    };
    let clear = !ctx.json && std::io::stdout().is_terminal();
    let interrupt = Interrupt::install();
    while !interrupt.is_set() {
        let s = gather(&mut db).await?;
        if clear {
            out::line("\x1b[2J\x1b[H")?;
        }
        print(ctx, &s)?;
        if !ctx.json {
            out::line(format!(
                "(every {}; Ctrl-C to stop)",
                humantime::format_duration(every)
            ))?;
        }
        out::flush()?;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.wait() => break,
        }
    }
    conn::close(db).await;
    Ok(())
}
