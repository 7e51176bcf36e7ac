//! `pgq dlq ...`: list, show, replay and purge dead letters (`pgq_core::dead_letters`).

use std::io::{BufRead, IsTerminal, Write};

use pgq_core::sqlx::{Acquire, PgConnection};
use pgq_core::{DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterSelection};
use serde::Serialize;

use crate::cli::DlqCmd;
use crate::error::CliError;
use crate::out;
use crate::queue::db_error;
use crate::{Ctx, conn};

/// Run a `pgq dlq` command.
pub(crate) async fn run(ctx: &Ctx, cmd: DlqCmd) -> Result<(), CliError> {
    let mut db = ctx.connect().await?;
    let result = run_on(ctx, &mut db, cmd).await;
    conn::close(db).await;
    result
}

#[derive(Serialize)]
struct Done<'a, T: Serialize> {
    action: &'a str,
    count: usize,
    items: &'a [T],
}

fn selection(ids: Vec<i64>, all: bool) -> DeadLetterSelection {
    if all {
        DeadLetterSelection::All
    } else {
        DeadLetterSelection::Ids(ids.into_iter().map(DeadLetterId).collect())
    }
}

async fn run_on(ctx: &Ctx, db: &mut PgConnection, cmd: DlqCmd) -> Result<(), CliError> {
    match cmd {
        DlqCmd::List {
            queue,
            consumer,
            limit,
        } => {
            let filter = DeadLetterFilter {
                queue,
                consumer,
                limit,
            };
            let rows = pgq_core::list_dead_letters(&mut *db, &filter).await?;
            if ctx.json {
                return out::json(&rows);
            }
            if rows.is_empty() {
                return out::line("no dead letters");
            }
            let mut t = out::table(vec![
                "id",
                "queue",
                "consumer",
                "ev_id",
                "type",
                "retry",
                "failed at",
                "reason",
                "data",
            ]);
            for r in &rows {
                t.add_row(vec![
                    r.id.to_string(),
                    out::one_line(&r.queue),
                    out::one_line(&r.consumer),
                    r.ev_id.to_string(),
                    out::one_line(&out::opt(r.ev_type.as_deref())),
                    r.retry.to_string(),
                    out::time(r.failed_at),
                    out::one_line(&shorten(&r.reason, 60)),
                    out::one_line(&shorten(r.data.as_deref().unwrap_or("NULL"), 40)),
                ]);
            }
            out::print_table(&t)
        }
        DlqCmd::Show { id } => {
            let row = pgq_core::get_dead_letter(&mut *db, DeadLetterId(id))
                .await?
                .ok_or_else(|| CliError::Refused(format!("dead letter {id} not found")))?;
            if ctx.json {
                return out::json(&row);
            }
            out::print_table(&show_table(&row))
        }
        DlqCmd::Replay {
            ids,
            all,
            queue,
            consumer,
            to,
        } => {
            let sel = selection(ids, all);
            let done = pgq_core::replay_dead_letters(
                &mut *db,
                &sel,
                queue.as_ref(),
                consumer.as_ref(),
                to.as_ref(),
            )
            .await?;
            if ctx.json {
                return out::json(&Done {
                    action: "replay",
                    count: done.len(),
                    items: &done,
                });
            }
            for r in &done {
                out::line(format!(
                    "dead letter {} replayed into queue {:?} as event {}",
                    r.id,
                    out::one_line(&r.queue),
                    r.ev_id
                ))?;
            }
            out::line(format!("{} dead letter(s) replayed", done.len()))
        }
        DlqCmd::Purge {
            ids,
            older_than,
            all,
            queue,
            yes,
        } => {
            let sel = selection(ids, all || older_than.is_some());
            let ask = !yes && std::io::stdin().is_terminal();
            let mut tx = db.begin().await.map_err(db_error)?;
            let gone =
                pgq_core::purge_dead_letters(&mut *tx, &sel, queue.as_ref(), older_than).await?;
            if ask && !gone.is_empty() && !confirm(gone.len())? {
                tx.rollback().await.map_err(db_error)?;
                return Err(CliError::Refused(
                    "purge cancelled: nothing was deleted".to_owned(),
                ));
            }
            tx.commit().await.map_err(db_error)?;
            if ctx.json {
                return out::json(&Done {
                    action: "purge",
                    count: gone.len(),
                    items: &gone,
                });
            }
            out::line(format!("{} dead letter(s) purged", gone.len()))
        }
    }
}

/// Ask on the terminal whether to delete `n` dead letters.
fn confirm(n: usize) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    write!(err, "delete {n} dead letter(s) for good? [y/N] ")
        .and_then(|()| err.flush())
        .map_err(|e| CliError::io("writing to the terminal", e))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::io("reading the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max_chars - 1).collect();
    s.push('…');
    s
}

fn show_table(r: &DeadLetter) -> comfy_table::Table {
    let null = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "NULL".to_owned(), out::one_line)
    };
    let mut t = out::plain_table();
    let rows: [(&str, String); 15] = [
        ("id", r.id.to_string()),
        ("queue", out::one_line(&r.queue)),
        ("consumer", out::one_line(&r.consumer)),
        ("ev_id", r.ev_id.to_string()),
        ("ev_time", out::time(r.ev_time)),
        ("txid", out::opt(r.txid)),
        ("type", null(&r.ev_type)),
        ("data", null(&r.data)),
        ("extra1", null(&r.extra1)),
        ("extra2", null(&r.extra2)),
        ("extra3", null(&r.extra3)),
        ("extra4", null(&r.extra4)),
        ("retry", r.retry.to_string()),
        ("reason", out::one_line(&r.reason)),
        ("failed_at", out::time(r.failed_at)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t
}
