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
    /// `no_ticker`, `no_ticks`, `tick_overdue`, `queue_paused`, `rotation_held_back`,
    /// `schema_outdated`, `pgq_not_installed`, `dead_letters`, `xmin_horizon_held`.
    kind: &'static str,
    queue_name: Option<String>,
    consumer_name: Option<String>,
    message: String,
}

#[derive(Debug, Serialize)]
struct Status {
    /// The pgq backend: `extension` or `sql` (`null`: pgq is not installed).
    backend: Option<pgq_core::Backend>,
    pgq_version: Option<String>,
    schema_version: Option<i64>,
    ticker_alive: Option<bool>,
    /// Which pgq_coop is installed (`null`: none).
    coop: Option<pgq_core::CoopFlavor>,
    queues: Vec<QueueView>,
    consumers: Vec<ConsumerView>,
    /// Dead letters per queue and consumer (`pgq dlq list`).
    dead_letters: Vec<pgq_core::DeadLetterCount>,
    warnings: Vec<Warning>,
}

/// Dead letters newer than this are "new": `status` warns about them (and `--check` fails).
const NEW_DEAD_LETTERS: Duration = Duration::from_secs(24 * 3600);

fn warn(kind: &'static str, q: Option<&str>, c: Option<&str>, message: String) -> Warning {
    Warning {
        kind,
        queue_name: q.map(str::to_owned),
        consumer_name: c.map(str::to_owned),
        message,
    }
}

async fn gather(db: &mut PgConnection, horizon_after: Duration) -> Result<Status, CliError> {
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
            backend: None,
            pgq_version: None,
            schema_version: check.schema_version,
            ticker_alive: None,
            coop: check.coop,
            queues: Vec::new(),
            consumers: Vec::new(),
            dead_letters: Vec::new(),
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
                "no ticker is running (no session holds pgq-ticker's lock and no pgqd is \
                 connected; newest tick: {}): start pgq-ticker or pgqd, or tick by hand with \
                 `pgq tick`",
                newest.map_or("none".to_owned(), |a| format!("{} ago", out::dur(a)))
            ),
        ));
    }
    let ages: std::collections::HashMap<&str, &pgq_core::QueueTickAge> = check
        .queues
        .iter()
        .map(|q| (q.queue_name.as_str(), q))
        .collect();
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
        } else if let Some(age) = ages
            .get(q)
            .and_then(|a| a.age)
            .filter(|age| v.ev_new > 0 && !v.external_ticker && tick_overdue(v, *age))
        {
            warnings.push(warn(
                "tick_overdue",
                Some(q),
                None,
                format!(
                    "queue {q:?} has {} new event(s) but its newest tick is {} old (ticker_max_lag \
                     {}): consumers do not see them until a tick; is the ticker running and \
                     keeping up?",
                    v.ev_new,
                    out::dur(age),
                    out::dur(Duration::from_secs_f64(v.ticker_max_lag_secs))
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
    let dead_letters = dead_letter_counts(db, &mut warnings).await?;
    horizon_warning(db, horizon_after, &mut warnings).await?;
    Ok(Status {
        backend: check.backend,
        pgq_version: check.pgq_version,
        schema_version: check.schema_version,
        ticker_alive: check.ticker_alive,
        coop: check.coop,
        queues: views,
        consumers: ConsumerView::group(&consumers, &retries),
        dead_letters,
        warnings,
    })
}

/// A replication slot whose horizon is this many transactions old is warned about (slots have
/// no start time); an inactive slot always is.
const HORIZON_SLOT_XIDS: i32 = 1_000_000;

/// The oldest holder of the xmin horizon, when it has held it longer than `horizon_after` (a
/// session or prepared transaction; `pgq status --horizon-after`, default 60 s). A
/// schema without `pgq_rs.xmin_horizon_holder` (older than this build) or a role that may not
/// call it gets no warning.
async fn horizon_warning(
    db: &mut PgConnection,
    horizon_after: Duration,
    warnings: &mut Vec<Warning>,
) -> Result<(), CliError> {
    let holder = match pgq_core::xmin_horizon_holder(&mut *db).await {
        Ok(h) => h,
        Err(e)
            if matches!(
                e.kind(),
                pgq_core::ErrorKind::PermissionDenied | pgq_core::ErrorKind::PgqNotInstalled
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(h) = holder else { return Ok(()) };
    let effect = "no row version written since can be removed, so every batch makes the next \
                  one dearer (each consumer's pgq.subscription row keeps all its versions): \
                  pgq-consumer paces its batches (delivery slows from milliseconds to tens of \
                  milliseconds), consumers on pgq's own functions (python3-pgq, pgqueue) may fall \
                  further behind, and tables bloat";
    let o = |v: &Option<String>| out::one_line(v.as_deref().unwrap_or("?"));
    let message = match h.kind.as_str() {
        "session" => {
            let Some(held) = h.held_for.filter(|d| *d >= horizon_after) else {
                return Ok(());
            };
            let pid = h.pid.unwrap_or_default();
            format!(
                "session {pid} (user {}, application {}, {}) has held the xmin horizon for {}: \
                 {effect}. Commit or end it (`select pg_terminate_backend({pid})`)",
                o(&h.user),
                o(&h.application),
                o(&h.state),
                out::dur(held)
            )
        }
        "prepared transaction" => {
            let Some(held) = h.held_for.filter(|d| *d >= horizon_after) else {
                return Ok(());
            };
            format!(
                "prepared transaction {} (owner {}) has held the xmin horizon for {}: {effect}. \
                 Finish it with COMMIT PREPARED or ROLLBACK PREPARED",
                o(&h.name),
                o(&h.user),
                out::dur(held)
            )
        }
        _ => {
            if h.state.as_deref() == Some("active") && h.xid_age < HORIZON_SLOT_XIDS {
                return Ok(());
            }
            format!(
                "replication slot {} ({}) holds the xmin horizon {} transactions back: {effect}. \
                 Let its consumer catch up, or drop it (`select pg_drop_replication_slot(...)`)",
                o(&h.name),
                o(&h.state),
                h.xid_age
            )
        }
    };
    warnings.push(warn("xmin_horizon_held", None, None, message));
    Ok(())
}

/// Dead letters per queue and consumer, with a warning for each that has new ones (failed within
/// the last [`NEW_DEAD_LETTERS`]). A role that may not read them (they need pgq_reader), or a
/// schema from before dead letters, gets none.
async fn dead_letter_counts(
    db: &mut PgConnection,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<pgq_core::DeadLetterCount>, CliError> {
    let counts = match pgq_core::dead_letter_counts(&mut *db).await {
        Ok(c) => c.into_iter().filter(|d| d.count > 0).collect::<Vec<_>>(),
        // A role that may not read them, or a schema from before dead letters (the
        // `schema_outdated` warning says to install): no counts, the rest of the status stands.
        Err(e)
            if matches!(
                e.kind(),
                pgq_core::ErrorKind::PermissionDenied | pgq_core::ErrorKind::PgqNotInstalled
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let since = chrono::Utc::now()
        - chrono::TimeDelta::from_std(NEW_DEAD_LETTERS).unwrap_or(chrono::TimeDelta::MAX);
    for d in counts
        .iter()
        .filter(|d| d.newest.is_some_and(|t| t > since))
    {
        warnings.push(warn(
            "dead_letters",
            Some(&d.queue),
            Some(&d.consumer),
            format!(
                "consumer {:?} of queue {:?} has {} dead letter(s), the newest from {}: inspect \
                 them with `pgq dlq list {} --consumer {}`, then replay or purge them",
                d.consumer,
                d.queue,
                d.count,
                out::opt(d.newest.map(out::time)),
                sh(&d.queue),
                sh(&d.consumer)
            ),
        ));
    }
    Ok(counts)
}

/// Whether a queue with new events waited for its tick clearly longer than its `ticker_max_lag`
/// asks (10 s of slack: a ticker round, pgqd's 1 s period, a busy server).
fn tick_overdue(v: &QueueView, age: Duration) -> bool {
    age.as_secs_f64() > v.ticker_max_lag_secs + 10.0
}

/// Which pgq_coop is installed, for people: whether pgq-consumer's cooperative members can use it.
pub(crate) fn coop_line(coop: Option<&pgq_core::CoopFlavor>) -> String {
    match coop {
        None => "not installed (run `pgq install`)".to_owned(),
        Some(f) if f.is_ours() => format!("{f}"),
        Some(f) => format!(
            "{f}: pgq-consumer's cooperative members refuse to run against it (python3-pgq's \
             CoopConsumer can use it)"
        ),
    }
}

fn print(ctx: &Ctx, s: &Status) -> Result<(), CliError> {
    if ctx.json {
        return out::json(s);
    }
    out::line(format!(
        "pgq {}{}, schema {}, ticker {}",
        out::opt(s.pgq_version.as_deref()),
        s.backend
            .map(|b| format!(" ({b} backend)"))
            .unwrap_or_default(),
        out::opt(s.schema_version),
        match s.ticker_alive {
            Some(true) => "alive",
            Some(false) => "NOT RUNNING",
            None => "unknown",
        }
    ))?;
    out::line(format!("pgq_coop: {}", coop_line(s.coop.as_ref())))?;
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
    if !s.dead_letters.is_empty() {
        out::line("")?;
        let mut t = out::table(vec!["queue", "consumer", "dead letters", "newest"]);
        for d in &s.dead_letters {
            t.add_row(vec![
                out::one_line(&d.queue),
                out::one_line(&d.consumer),
                d.count.to_string(),
                out::opt(d.newest.map(out::time)),
            ]);
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
pub(crate) async fn run(
    ctx: &Ctx,
    watch: Option<Duration>,
    check: bool,
    horizon_after: Duration,
) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let Some(every) = watch else {
        let result = gather(&mut db, horizon_after).await;
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
        let s = gather(&mut db, horizon_after).await?;
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
