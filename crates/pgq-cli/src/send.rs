//! `pgq send`: one event from the arguments, or many from JSON lines (COPY or set-based, in one
//! transaction).

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgq_core::sqlx::{Acquire, PgConnection};
use pgq_core::{ChunkLimits, NewEvent, PgqRole, QueueName};
use serde::Serialize;
use serde::de::IgnoredAny;

use crate::cli::SendArgs;
use crate::consumer::require_queue;
use crate::error::{CliError, Names};
use crate::queue::db_error;
use crate::{Ctx, conn, out};

/// The longest line `--file` accepts, in bytes (64 MiB): a longer line is refused before it is
/// read whole, so a file without line breaks cannot exhaust memory.
pub(crate) const MAX_LINE_BYTES: usize = 64 << 20;

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// End of input, nothing read.
    Eof,
    /// A line was read into the buffer (without its line break); this many bytes of input were
    /// consumed, line break included.
    Line(usize),
    /// The line is longer than the limit; reading stopped there.
    TooLong,
}

/// Read one line into `buf` (cleared first), without its line break, reading at most `max` bytes
/// of it: a longer line is not read further.
fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut consumed = 0;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if consumed == 0 {
                LineRead::Eof
            } else {
                LineRead::Line(consumed)
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if buf.len() + part.len() > max {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(part);
        let used = done.unwrap_or(part.len());
        reader.consume(used);
        consumed += used;
        if done.is_some() {
            return Ok(LineRead::Line(consumed));
        }
    }
}

/// What is wrong with a line that does not start like a JSON object (`None` when it does).
fn not_an_object(text: &str) -> Option<String> {
    if text.starts_with('{') {
        return None;
    }
    if text.starts_with('\u{feff}') {
        return Some(
            "the line starts with a UTF-8 byte order mark (BOM), which JSON lines must not have: \
             save the file as UTF-8 without BOM (or strip it: `sed -i '1s/^\\xEF\\xBB\\xBF//' \
             FILE`)"
                .to_owned(),
        );
    }
    // Only bad lines get here, so parsing twice costs nothing on the good path.
    let what = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(_)) => "a JSON array",
        Ok(serde_json::Value::String(_)) => "a JSON string",
        Ok(serde_json::Value::Number(_)) => "a JSON number",
        Ok(serde_json::Value::Bool(_)) => "a JSON boolean",
        Ok(serde_json::Value::Null) => "JSON null",
        Ok(serde_json::Value::Object(_)) => return None,
        Err(e) => return Some(json_error(&e)),
    };
    Some(format!(
        "this line is {what}, but each line must be one JSON object like \
         {{\"type\": \"...\", \"data\": ...}}{}",
        if what == "a JSON array" {
            " (one event per line: `jq -c '.[]' FILE` turns an array into lines)"
        } else {
            ""
        }
    ))
}

/// A JSON parse error without serde's "at line 1" (the caller names the line).
fn json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m)
        .to_owned();
    format!("{msg} (column {})", e.column())
}

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
    if let Some(wrong) = not_an_object(text) {
        return Err(wrong);
    }
    let line: Line = serde_json::from_str(text).map_err(|e| json_error(&e))?;
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
        if v.is_some_and(|v| pgq_core::text_problem(v).is_some()) {
            return Err(format!(
                "`{name}` contains a NUL character or is over 1 GiB, which PostgreSQL cannot store"
            ));
        }
    }
    Ok(ev)
}

/// Reads events from JSON lines, counting lines and remembering the first bad one.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
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
            let read = read_line_capped(&mut self.reader, &mut self.buf, MAX_LINE_BYTES);
            let n = match read {
                Ok(LineRead::Eof) => return None,
                Ok(LineRead::Line(n)) => n,
                Ok(LineRead::TooLong) => {
                    self.line_no += 1;
                    return Some(Err(self.fail(format!(
                        "the line is longer than {} MiB, the limit for one line (one event); \
                         reading stopped there",
                        MAX_LINE_BYTES >> 20
                    ))));
                }
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
            let parsed = match std::str::from_utf8(&self.buf) {
                Err(_) => Err("the line is not valid UTF-8: save the file as UTF-8".to_owned()),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(text.trim()),
            };
            return Some(parsed.map_err(|e| self.fail(e)));
        }
    }
}

impl<R> Lines<R> {
    /// Record that the current line is bad (`why`), so nothing is sent; the message.
    fn fail(&self, why: String) -> String {
        let msg = format!(
            "{}:{}: {why}: nothing was sent (fix the line and send again)",
            self.source, self.line_no
        );
        *self.failed.borrow_mut() = Some(CliError::Input(msg.clone()));
        msg
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
        buf: Vec::new(),
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
        // A bad line ends the events (it is kept in `failed`, and nothing is committed).
        let events = lines.by_ref().map_while(Result::ok);
        pgq_core::insert_events_chunked(&mut tx, queue, events, ChunkLimits::DEFAULT).await
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
    use super::{LineRead, parse_line, read_line_capped};

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

    #[test]
    fn lines_that_are_not_objects_say_so() {
        let e = parse_line(r#"[{"type":"t","data":"d"}]"#).unwrap_err();
        assert!(e.contains("JSON array") && e.contains("jq -c"), "{e}");
        // Positional form would otherwise deserialize as the struct.
        let e = parse_line(r#"["t","d"]"#).unwrap_err();
        assert!(e.contains("JSON array"), "{e}");
        let e = parse_line("\u{feff}{\"type\":\"t\",\"data\":\"d\"}").unwrap_err();
        assert!(e.contains("byte order mark"), "{e}");
        assert!(parse_line("42").unwrap_err().contains("JSON number"));
        assert!(parse_line("\"s\"").unwrap_err().contains("JSON string"));
        assert!(parse_line("not json").unwrap_err().contains("expected"));
    }

    #[test]
    fn capped_lines() {
        let mut r = std::io::BufReader::with_capacity(4, &b"abc\nabcdefgh\nxy"[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 5).unwrap(),
            LineRead::Line(4)
        );
        assert_eq!(buf, b"abc");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 5).unwrap(),
            LineRead::TooLong
        );
        let mut r = std::io::BufReader::with_capacity(4, &b"abcde\nxy"[..]);
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 5).unwrap(),
            LineRead::Line(6)
        );
        assert_eq!(buf, b"abcde");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 5).unwrap(),
            LineRead::Line(2)
        );
        assert_eq!(buf, b"xy");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 5).unwrap(),
            LineRead::Eof
        );
    }
}
