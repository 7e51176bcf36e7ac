//! `pgq send`: one event from the arguments, or many from JSON lines (COPY or set-based, in one
//! transaction).

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgq_core::sqlx::{Acquire, PgConnection};
use pgq_core::{NewEvent, PgqRole, QueueName};
use serde::Serialize;
use serde::de::IgnoredAny;

use crate::cli::SendArgs;
use crate::consumer::require_queue;
use crate::error::{CliError, Names};
use crate::queue::db_error;
use crate::{Ctx, conn, out};

/// Events per set-based insert statement.
const CHUNK: usize = 1000;

/// One line of `--file`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    ev_type: String,
    data: serde_json::Value,
    #[serde(default)]
    extra1: Option<String>,
    #[serde(default)]
    extra2: Option<String>,
    #[serde(default)]
    extra3: Option<String>,
    #[serde(default)]
    extra4: Option<String>,
    // Fields of `pgq tail --json` output, accepted and ignored so it can be sent again.
    #[serde(default)]
    batch_id: Option<IgnoredAny>,
    #[serde(default)]
    ev_id: Option<IgnoredAny>,
    #[serde(default)]
    time: Option<IgnoredAny>,
    #[serde(default)]
    txid: Option<IgnoredAny>,
    #[serde(default)]
    retry: Option<IgnoredAny>,
}

/// Parse one non-blank line into an event, or say what is wrong with it.
fn parse_line(text: &str) -> Result<NewEvent, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m)
            .to_owned();
        format!("{msg} (column {})", e.column())
    })?;
    let _ = (line.batch_id, line.ev_id, line.time, line.txid, line.retry);
    let ev_data = match line.data {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => {
            return Err("`data` is null: give a string or another JSON value".to_owned());
        }
        other => other.to_string(),
    };
    let ev = NewEvent {
        ev_type: line.ev_type,
        ev_data,
        extra1: line.extra1,
        extra2: line.extra2,
        extra3: line.extra3,
        extra4: line.extra4,
        time: None,
    };
    for (name, v) in [
        ("type", Some(&ev.ev_type)),
        ("data", Some(&ev.ev_data)),
        ("extra1", ev.extra1.as_ref()),
        ("extra2", ev.extra2.as_ref()),
        ("extra3", ev.extra3.as_ref()),
        ("extra4", ev.extra4.as_ref()),
    ] {
        if let Some(v) = v {
            pgq_core::check_text("send", name, v).map_err(|_| {
                format!("`{name}` contains a NUL character or is over 1 GiB, which PostgreSQL cannot store")
            })?;
        }
    }
    Ok(ev)
}

/// Reads events from JSON lines, counting lines and remembering the first bad one.
struct Lines<R> {
    reader: R,
    buf: String,
    line_no: u64,
    failed: Rc<RefCell<Option<CliError>>>,
    source: String,
    progress: ProgressBar,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<NewEvent, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed.borrow().is_some() {
            return None;
        }
        loop {
            self.buf.clear();
            let n = match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    let err = CliError::io(
                        format!("reading {} (line {})", self.source, self.line_no + 1),
                        e,
                    );
                    let msg = err.to_string();
                    *self.failed.borrow_mut() = Some(err);
                    return Some(Err(msg));
                }
            };
            self.line_no += 1;
            self.progress.inc(n as u64);
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            return Some(parse_line(text).map_err(|e| {
                let msg = format!(
                    "{}:{}: {e}: nothing was sent (fix the line and send again)",
                    self.source, self.line_no
                );
                *self.failed.borrow_mut() = Some(CliError::Input(msg.clone()));
                msg
            }));
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    queue_name: &'a str,
    events: u64,
    ev_id: Option<i64>,
    method: &'a str,
    seconds: f64,
    events_per_sec: Option<f64>,
}

fn progress_bar(len: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} read")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

/// Send the events of `path` in one transaction; returns how many and the method used.
async fn send_file(
    db: &mut PgConnection,
    queue: &QueueName,
    path: &Path,
) -> Result<(u64, &'static str), CliError> {
    let (reader, source, len): (Box<dyn Read>, String, Option<u64>) = if path == Path::new("-") {
        (
            Box::new(std::io::stdin()),
            "standard input".to_owned(),
            None,
        )
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), path.display().to_string(), len)
    };
    let failed = Rc::new(RefCell::new(None));
    let progress = progress_bar(len);
    let mut lines = Lines {
        reader: BufReader::with_capacity(256 * 1024, reader),
        buf: String::new(),
        line_no: 0,
        failed: Rc::clone(&failed),
        source,
        progress: progress.clone(),
    };
    let copy = pgq_core::has_pgq_role(&mut *db, PgqRole::Admin).await?;
    let mut tx = db.begin().await.map_err(db_error)?;
    let sent = if copy {
        pgq_core::copy_events(&mut tx, queue, futures_util::stream::iter(&mut lines)).await
    } else {
        let mut total = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let next = lines.next();
            let end = matches!(next, None | Some(Err(_)));
            if let Some(Ok(ev)) = next {
                chunk.push(ev);
            }
            if chunk.len() >= CHUNK || (end && !chunk.is_empty()) {
                if let Err(e) = pgq_core::insert_events(&mut *tx, queue, &chunk).await {
                    break Err(e);
                }
                total += chunk.len() as u64;
                chunk.clear();
            }
            if end {
                break Ok(total);
            }
        }
    };
    progress.finish_and_clear();
    if let Some(err) = failed.borrow_mut().take() {
        // The transaction rolls back when dropped: nothing of this file is kept.
        return Err(err);
    }
    let n = sent.queue(queue)?;
    tx.commit().await.map_err(db_error)?;
    Ok((n, if copy { "copy" } else { "insert" }))
}

/// Run `pgq send`.
pub(crate) async fn run(ctx: &Ctx, args: SendArgs) -> Result<(), CliError> {
    let queue = args.queue;
    let mut db = ctx.connect().await?;
    let started = Instant::now();
    let result = async {
        require_queue(&mut db, &queue).await?;
        match &args.file {
            Some(path) => send_file(&mut db, &queue, path)
                .await
                .map(|(n, m)| (n, m, None)),
            None => {
                let ev = NewEvent {
                    ev_type: args.ev_type.unwrap_or_default(),
                    ev_data: args.data.unwrap_or_default(),
                    extra1: args.extra1,
                    extra2: args.extra2,
                    extra3: args.extra3,
                    extra4: args.extra4,
                    time: None,
                };
                let id = pgq_core::insert_event_ext(&mut db, &queue, &ev)
                    .await
                    .queue(&queue)?;
                Ok((1, "insert", Some(id.get())))
            }
        }
    }
    .await;
    conn::close(db).await;
    let (events, method, ev_id) = result?;
    let elapsed = started.elapsed();
    let rate = (elapsed > Duration::ZERO).then(|| events as f64 / elapsed.as_secs_f64());
    if ctx.json {
        return out::json(&Report {
            queue_name: queue.as_str(),
            events,
            ev_id,
            method,
            seconds: elapsed.as_secs_f64(),
            events_per_sec: rate,
        });
    }
    match ev_id {
        Some(id) => out::line(format!("sent event {id} to queue {queue:?}")),
        None => out::line(format!(
            "sent {events} event{} to queue {queue:?} in {} ({} events/s, {})",
            if events == 1 { "" } else { "s" },
            out::dur(elapsed),
            rate.map_or("-".to_owned(), |r| format!("{r:.0}")),
            if method == "copy" {
                "COPY"
            } else {
                "set-based insert"
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn lines() {
        let ev = parse_line(r#"{"type":"t","data":{"a":1},"extra2":"x"}"#).unwrap();
        assert_eq!(ev.ev_data, r#"{"a":1}"#);
        assert_eq!(ev.extra2.as_deref(), Some("x"));
        assert!(parse_line(r#"{"type":"t"}"#).unwrap_err().contains("data"));
        assert!(parse_line(r#"{"type":"t","data":"d","typo":1}"#).is_err());
        assert!(parse_line(r#"{"type":"t","data":"a\u0000b"}"#).is_err());
        assert!(parse_line("not json").is_err());
        let replay = r#"{"batch_id":1,"ev_id":2,"time":"x","txid":3,"retry":null,"type":"t","data":"d","extra1":null}"#;
        assert!(parse_line(replay).is_ok());
    }
}
