//! `pgq install [--check]`.

use serde::Serialize;

use crate::error::CliError;
use crate::{Ctx, conn, out};

#[derive(Serialize)]
struct QueueTickView {
    queue_name: String,
    last_tick_time: Option<chrono::DateTime<chrono::Utc>>,
    tick_age_secs: Option<f64>,
    ticked_here: bool,
}

#[derive(Serialize)]
struct CheckView {
    /// The pgq backend: `extension` or `sql` (`null`: pgq is not installed).
    backend: Option<pgq_core::Backend>,
    pgq_version: Option<String>,
    schema_version: Option<i64>,
    latest_schema_version: i64,
    schema_up_to_date: bool,
    ticker_alive: Option<bool>,
    /// The ticker's session (`null`: none running).
    ticker: Option<pgq_core::TickerSession>,
    /// Which pgq_coop is installed (`null`: none).
    coop: Option<pgq_core::CoopFlavor>,
    queues: Vec<QueueTickView>,
}

/// Install, or with `check` only report.
pub(crate) async fn run(
    ctx: &Ctx,
    check: bool,
    backend: Option<pgq_core::Backend>,
) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    if check {
        let r = pgq_core::check(&mut db).await?;
        conn::close(db).await;
        let up_to_date = r
            .schema_version
            .is_some_and(|v| v >= r.latest_schema_version);
        let view = CheckView {
            backend: r.backend,
            pgq_version: r.pgq_version.clone(),
            schema_version: r.schema_version,
            latest_schema_version: r.latest_schema_version,
            schema_up_to_date: up_to_date,
            ticker_alive: r.ticker_alive,
            ticker: r.ticker.clone(),
            coop: r.coop.clone(),
            queues: r
                .queues
                .iter()
                .map(|q| QueueTickView {
                    queue_name: q.queue_name.clone(),
                    last_tick_time: q.last_tick_time,
                    tick_age_secs: q.age.map(out::secs),
                    ticked_here: !q.not_ticked_here,
                })
                .collect(),
        };
        if ctx.json {
            out::json(&view)?;
        } else {
            out::line(format!(
                "pgq version:    {}{}",
                out::opt(r.pgq_version.as_deref()),
                r.backend
                    .map(|b| format!(" ({b} backend)"))
                    .unwrap_or_default()
            ))?;
            out::line(format!(
                "schema version: {} (this build: {}){}",
                out::opt(r.schema_version),
                r.latest_schema_version,
                if up_to_date {
                    ""
                } else {
                    " — run `pgq install`"
                }
            ))?;
            out::line(format!(
                "ticker:         {}",
                match (r.ticker_alive, &r.ticker) {
                    (Some(true), Some(t)) => format!(
                        "alive (pid {}, {})",
                        t.pid,
                        out::one_line(&t.application_name)
                    ),
                    (Some(true), None) => "alive".to_owned(),
                    (Some(false), _) => "NOT RUNNING: start pgq-ticker or pgqd".to_owned(),
                    (None, _) => "none (no queue yet)".to_owned(),
                }
            ))?;
            out::line(format!(
                "pgq_coop:       {}",
                crate::status::coop_line(r.coop.as_ref())
            ))?;
            if !r.queues.is_empty() {
                let mut t = out::table(["queue", "last tick", "tick age", "ticked here"]);
                for q in &r.queues {
                    t.add_row([
                        out::one_line(&q.queue_name),
                        q.last_tick_time.map_or("-".to_owned(), out::time),
                        out::opt_dur(q.age),
                        if q.not_ticked_here {
                            "no (paused or external)"
                        } else {
                            "yes"
                        }
                        .to_owned(),
                    ]);
                }
                out::print_table(&t)?;
            }
        }
        return match (&r.pgq_version, up_to_date) {
            (None, _) => Err(CliError::Refused(
                "pgq is not installed in this database: run `pgq install`".to_owned(),
            )),
            (Some(_), false) => Err(CliError::Refused(format!(
                "this project's schema is {} but this build needs version {}: run `pgq install`",
                r.schema_version
                    .map_or("not installed".to_owned(), |v| format!("at version {v}")),
                r.latest_schema_version
            ))),
            _ => Ok(()),
        };
    }
    let options = pgq_core::InstallOptions::new().backend(backend);
    let r = pgq_core::install_with(&mut db, &options).await?;
    conn::close(db).await;
    if ctx.json {
        out::json(&r)?;
    } else if r.applied.is_empty() {
        out::line(format!(
            "already installed: pgq {} ({} backend: {}), schema version {}",
            r.pgq_version, r.backend, r.backend_note, r.schema_version
        ))?;
    } else {
        let applied: Vec<String> = r.applied.iter().map(i64::to_string).collect();
        out::line(format!(
            "installed: pgq {} ({} backend: {}), schema version {} (applied {})",
            r.pgq_version,
            r.backend,
            r.backend_note,
            r.schema_version,
            applied.join(", ")
        ))?;
    }
    Ok(())
}
