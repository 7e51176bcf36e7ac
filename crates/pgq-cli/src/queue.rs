//! `pgq queue ...`.

use pgq_core::sqlx::PgConnection;
use pgq_core::{QueueConfig, QueueName, QueueSetting};
use serde::Serialize;

use crate::cli::QueueCmd;
use crate::error::{CliError, Names, sh};
use crate::out::{self, ConfigView, ConsumerView, QueueView};
use crate::{Ctx, conn};

/// Parse `KEY=VALUE` ([`QueueSetting`]'s own parsing and checks; clap reports a bad one as a
/// usage error).
pub(crate) fn parse_setting(s: &str) -> Result<QueueSetting, String> {
    s.parse()
        .map_err(|e: pgq_core::QueueSettingError| e.to_string())
}

#[derive(Serialize)]
struct Done<'a> {
    queue_name: &'a str,
    action: &'a str,
    changed: bool,
}

async fn done(
    ctx: &Ctx,
    queue: &QueueName,
    action: &str,
    changed: bool,
    text: String,
) -> Result<(), CliError> {
    if ctx.json {
        out::json(&Done {
            queue_name: queue.as_str(),
            action,
            changed,
        })
    } else {
        out::line(text)
    }
}

/// Run a `pgq queue` command.
pub(crate) async fn run(ctx: &Ctx, cmd: QueueCmd) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let result = run_on(ctx, &mut db, cmd).await;
    conn::close(db).await;
    result
}

async fn run_on(ctx: &Ctx, db: &mut PgConnection, cmd: QueueCmd) -> Result<(), CliError> {
    match cmd {
        QueueCmd::Create {
            name,
            ticker_max_count,
            ticker_max_lag,
            ticker_idle_period,
            rotation_period,
            consumers,
            if_not_exists,
        } => {
            let config = QueueConfig {
                ticker_max_count,
                ticker_max_lag,
                ticker_idle_period,
                rotation_period,
                ..Default::default()
            };
            if !if_not_exists && pgq_core::queue_exists(&mut *db, &name).await? {
                return Err(CliError::Refused(format!(
                    "queue {name:?} exists already: `pgq queue config {}` shows or changes its \
                     settings (or pass --if-not-exists)",
                    sh(name.as_str())
                )));
            }
            let created = pgq_core::create_queue_with(&mut *db, &name, &config, &consumers)
                .await
                .queue(&name)?;
            let with = if consumers.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = consumers.iter().map(|c| format!("{c:?}")).collect();
                format!(" with consumer(s) {}", names.join(", "))
            };
            if !created {
                return done(
                    ctx,
                    &name,
                    "create",
                    false,
                    format!("queue {name:?} exists already (settings left unchanged){with}"),
                )
                .await;
            }
            done(
                ctx,
                &name,
                "create",
                true,
                format!("created queue {name:?}{with}"),
            )
            .await
        }
        QueueCmd::Drop { name, force } => {
            let consumers = pgq_core::get_consumer_info_queue(&mut *db, &name).await?;
            pgq_core::require_queue(&mut *db, &name)
                .await
                .queue(&name)?;
            if !consumers.is_empty() && !force {
                let names: Vec<String> = consumers
                    .iter()
                    .map(|c| format!("{:?}", c.consumer_name))
                    .collect();
                return Err(CliError::Refused(format!(
                    "queue {name:?} still has {} consumer(s): {}; unregister them with `pgq \
                     consumer unregister {} NAME`, or drop anyway with `pgq queue drop {} --force` \
                     (their unread events are lost)",
                    consumers.len(),
                    names.join(", "),
                    sh(name.as_str()),
                    sh(name.as_str())
                )));
            }
            pgq_core::drop_queue(&mut *db, &name, force)
                .await
                .queue(&name)?;
            done(ctx, &name, "drop", true, format!("dropped queue {name:?}")).await
        }
        QueueCmd::List => {
            let queues = pgq_core::get_queue_info_all(&mut *db).await?;
            let consumers = pgq_core::get_consumer_info_all(&mut *db).await?;
            let views = QueueView::all(&queues, &consumers);
            if ctx.json {
                return out::json(&views);
            }
            if views.is_empty() {
                return out::line("no queues: create one with `pgq queue create NAME`");
            }
            out::print_table(&queue_table(&views))
        }
        QueueCmd::Info { name } => {
            let info = pgq_core::get_queue_info(&mut *db, &name)
                .await
                .queue(&name)?;
            let config = pgq_core::get_queue_config(&mut *db, &name)
                .await
                .queue(&name)?;
            let consumers = pgq_core::get_consumer_info_queue(&mut *db, &name).await?;
            let retries = pgq_core::retry_queue_counts(&mut *db).await?;
            let view = QueueView::new(&info, consumers.len());
            let cviews = ConsumerView::group(&consumers, &retries);
            if ctx.json {
                #[derive(Serialize)]
                struct InfoView {
                    queue: QueueView,
                    config: ConfigView,
                    consumers: Vec<ConsumerView>,
                }
                return out::json(&InfoView {
                    queue: view,
                    config: ConfigView::new(name.as_str(), &config),
                    consumers: cviews,
                });
            }
            let mut t = out::plain_table();
            t.add_row(["queue".to_owned(), out::one_line(&info.queue_name)]);
            t.add_row(["state".to_owned(), view.state().to_owned()]);
            t.add_row(["ticker lag".to_owned(), out::dur(info.ticker_lag)]);
            t.add_row(["last tick".to_owned(), out::opt(info.last_tick_id)]);
            t.add_row(["events/s".to_owned(), rate(info.ev_per_sec)]);
            t.add_row(["new events".to_owned(), info.ev_new.to_string()]);
            t.add_row([
                "event tables".to_owned(),
                format!("{} (current {})", info.queue_ntables, info.queue_cur_table),
            ]);
            t.add_row([
                "last rotation".to_owned(),
                out::time(info.queue_switch_time),
            ]);
            for (k, v) in ConfigView::rows(&config) {
                t.add_row([k.to_owned(), v]);
            }
            out::print_table(&t)?;
            out::line("")?;
            if cviews.is_empty() {
                out::line(format!(
                    "no consumers: register one with `pgq consumer register {} NAME`",
                    sh(name.as_str())
                ))
            } else {
                let mut t = out::table(ConsumerView::headers(false));
                for c in &cviews {
                    c.add_rows(&mut t, false);
                }
                out::print_table(&t)
            }
        }
        QueueCmd::Config { name, settings } => {
            if !settings.is_empty() {
                pgq_core::set_queue_config(&mut *db, &name, &settings.into_iter().collect())
                    .await
                    .queue(&name)?;
            }
            let config = pgq_core::get_queue_config(&mut *db, &name)
                .await
                .queue(&name)?;
            if ctx.json {
                return out::json(&ConfigView::new(name.as_str(), &config));
            }
            let mut t = out::table(["setting", "value"]);
            for (k, v) in ConfigView::rows(&config) {
                t.add_row([k.to_owned(), v]);
            }
            out::print_table(&t)
        }
        QueueCmd::Pause { name } => {
            pgq_core::pause_queue(&mut *db, &name).await.queue(&name)?;
            done(
                ctx,
                &name,
                "pause",
                true,
                format!(
                    "paused queue {name:?}: no new batches until `pgq queue resume {}`",
                    sh(name.as_str())
                ),
            )
            .await
        }
        QueueCmd::Resume { name } => {
            pgq_core::resume_queue(&mut *db, &name).await.queue(&name)?;
            done(
                ctx,
                &name,
                "resume",
                true,
                format!("resumed queue {name:?}"),
            )
            .await
        }
    }
}

/// Events per second for people.
pub(crate) fn rate(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.1}"))
}

/// The queue table of `queue list` and `status`.
pub(crate) fn queue_table(views: &[QueueView]) -> comfy_table::Table {
    let mut t = out::table([
        "queue",
        "state",
        "ticker lag",
        "last tick",
        "events/s",
        "new events",
        "consumers",
    ]);
    for v in views {
        t.add_row([
            out::one_line(&v.queue_name),
            v.state().to_owned(),
            out::dur(v.ticker_lag),
            out::opt(v.last_tick_id),
            rate(v.ev_per_sec),
            v.ev_new.to_string(),
            v.consumers.to_string(),
        ]);
    }
    t
}

/// A database error outside a core call (beginning or committing a transaction).
pub(crate) fn db_error(e: pgq_core::sqlx::Error) -> CliError {
    pgq_core::Error::transaction(e).into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(
            parse_setting("ticker_max_lag=500ms"),
            Ok(QueueSetting::TickerMaxLag(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_setting("per_tx_limit=none"),
            Ok(QueueSetting::PerTxLimit(None))
        );
        assert!(parse_setting("ticker_max_count=0").is_err());
        assert!(parse_setting("bogus=1").is_err());
        assert!(parse_setting("ticker_max_lag=soon").is_err());
        let e = parse_setting("ticker_max_lag=9999999999999999s").unwrap_err();
        assert!(
            e.contains("ticker_max_lag") && e.contains("out of range"),
            "{e}"
        );
        assert!(parse_setting("rotation_period=36500days").is_ok());
        assert!(parse_setting("novalue").is_err());
    }
}
