//! Printing: tables for people, JSON for scripts, durations, and the stable JSON views.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table, TableComponent, presets};
use pgq_core::{ConsumerInfo, QueueInfo, RetryCount, StoredQueueConfig};
use serde::Serialize;

use crate::error::CliError;

/// Write `text` and a newline to standard output.
pub(crate) fn line(text: impl std::fmt::Display) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::io("writing to standard output", e))
}

/// Print `value` as one line of JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::io("encoding JSON", std::io::Error::other(e)))?;
    line(text)
}

/// Flush standard output.
pub(crate) fn flush() -> Result<(), CliError> {
    std::io::stdout()
        .flush()
        .map_err(|e| CliError::io("writing to standard output", e))
}

/// A table with the project's look.
pub(crate) fn table(headers: impl Into<comfy_table::Row>) -> Table {
    let mut t = plain_table();
    t.set_header(headers);
    t
}

/// A table without a header (key/value listings).
pub(crate) fn plain_table() -> Table {
    let mut t = Table::new();
    // Like psql: a rule under the header, columns separated by spaces, no other lines.
    t.load_preset(presets::NOTHING);
    t.set_style(TableComponent::HeaderLines, '─');
    t.set_style(TableComponent::MiddleHeaderIntersections, '─');
    t.remove_style(TableComponent::LeftBorder);
    t.remove_style(TableComponent::RightBorder);
    t.remove_style(TableComponent::LeftHeaderIntersection);
    t.remove_style(TableComponent::RightHeaderIntersection);
    if std::io::stdout().is_terminal() {
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    t
}

/// Print a table, without the spaces that pad its right edge.
pub(crate) fn print_table(t: &Table) -> Result<(), CliError> {
    let text: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
    line(text.join("\n"))
}

/// A duration for people: whole seconds from 10 s up, milliseconds below.
pub(crate) fn dur(d: Duration) -> String {
    let d = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// An optional duration for people (`-` when absent).
pub(crate) fn opt_dur(d: Option<Duration>) -> String {
    d.map(dur).unwrap_or_else(|| "-".to_owned())
}

/// An optional value for people (`-` when absent).
pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

/// Seconds as a float, for JSON.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A timestamp for people (UTC, to the second).
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Whether `c` must not reach a terminal raw: control characters (escape sequences start with
/// ESC) and the invisible formatting characters names may not contain (bidirectional overrides,
/// zero-width characters; see [`pgq_core::is_invisible_format`]).
fn unsafe_for_terminal(c: char) -> bool {
    c.is_control() || pgq_core::is_invisible_format(c)
}

/// `text` made safe for a terminal: control characters and invisible formatting characters
/// escaped (`\n`, `\t`, `\u{1b}`, `\u{202e}`), so a name or an event stays on one line and
/// cannot move the cursor, clear the screen or display reversed. Every table and line of human
/// output that shows a name or event text from the database goes through this.
pub(crate) fn one_line(text: &str) -> String {
    if !text.chars().any(unsafe_for_terminal) {
        return text.to_owned();
    }
    let mut s = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if unsafe_for_terminal(c) => s.push_str(&c.escape_unicode().to_string()),
            c => s.push(c),
        }
    }
    s
}

/// `text` (an error message, which may span lines) with every control character but the line
/// break escaped, and invisible formatting characters escaped, like [`one_line`].
pub(crate) fn printable(text: &str) -> String {
    text.split('\n')
        .map(one_line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A queue as `queue list` / `queue info` / `status` show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueView {
    pub(crate) queue_name: String,
    pub(crate) ticker_lag_secs: f64,
    pub(crate) last_tick_id: Option<i64>,
    pub(crate) ev_per_sec: Option<f64>,
    pub(crate) ev_new: i64,
    pub(crate) ticker_paused: bool,
    pub(crate) external_ticker: bool,
    pub(crate) ticker_max_count: i32,
    pub(crate) ticker_max_lag_secs: f64,
    pub(crate) ticker_idle_period_secs: f64,
    pub(crate) rotation_period_secs: f64,
    pub(crate) last_rotation: DateTime<Utc>,
    pub(crate) event_tables: i32,
    pub(crate) current_table: i32,
    pub(crate) consumers: usize,
    #[serde(skip)]
    pub(crate) ticker_lag: Duration,
}

impl QueueView {
    /// The view of `info`, with the number of consumers on the queue.
    pub(crate) fn new(info: &QueueInfo, consumers: usize) -> QueueView {
        QueueView {
            queue_name: info.queue_name.clone(),
            ticker_lag_secs: secs(info.ticker_lag),
            last_tick_id: info.last_tick_id.map(|t| t.get()),
            ev_per_sec: info.ev_per_sec,
            ev_new: info.ev_new,
            ticker_paused: info.queue_ticker_paused,
            external_ticker: info.queue_external_ticker,
            ticker_max_count: info.queue_ticker_max_count,
            ticker_max_lag_secs: secs(info.queue_ticker_max_lag),
            ticker_idle_period_secs: secs(info.queue_ticker_idle_period),
            rotation_period_secs: secs(info.queue_rotation_period),
            last_rotation: info.queue_switch_time,
            event_tables: info.queue_ntables,
            current_table: info.queue_cur_table,
            consumers,
            ticker_lag: info.ticker_lag,
        }
    }

    /// Views of `queues`, each with its number of `consumers`.
    pub(crate) fn all(queues: &[QueueInfo], consumers: &[ConsumerInfo]) -> Vec<QueueView> {
        queues
            .iter()
            .map(|q| {
                let n = consumers
                    .iter()
                    .filter(|c| c.queue_name == q.queue_name)
                    .count();
                QueueView::new(q, n)
            })
            .collect()
    }

    /// The state column: paused, external, no ticks, or ok.
    pub(crate) fn state(&self) -> &'static str {
        if self.ticker_paused {
            "paused"
        } else if self.external_ticker {
            "external ticker"
        } else if self.last_tick_id.is_none() {
            "no ticks"
        } else {
            "ok"
        }
    }
}

/// A consumer as `consumer list` / `queue info` / `status` show it; cooperative members are
/// listed under their group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConsumerView {
    pub(crate) queue_name: String,
    pub(crate) consumer_name: String,
    pub(crate) lag_secs: Option<f64>,
    pub(crate) last_seen_secs: f64,
    pub(crate) last_tick_id: Option<i64>,
    pub(crate) current_batch: Option<i64>,
    pub(crate) next_tick_id: Option<i64>,
    pub(crate) pending_events: i64,
    pub(crate) retry_events: i64,
    pub(crate) members: Vec<ConsumerView>,
    #[serde(skip)]
    lag: Option<Duration>,
    #[serde(skip)]
    last_seen: Duration,
}

impl ConsumerView {
    fn new(c: &ConsumerInfo, retries: &[RetryCount]) -> ConsumerView {
        ConsumerView {
            queue_name: c.queue_name.clone(),
            consumer_name: c.consumer_name.clone(),
            lag_secs: c.lag.map(secs),
            last_seen_secs: secs(c.last_seen),
            last_tick_id: c.last_tick.map(|t| t.get()),
            current_batch: c.current_batch.map(|b| b.get()),
            next_tick_id: c.next_tick.map(|t| t.get()),
            pending_events: c.pending_events,
            retry_events: retries
                .iter()
                .find(|r| r.queue_name == c.queue_name && r.consumer_name == c.consumer_name)
                .map_or(0, |r| r.events),
            members: Vec::new(),
            lag: c.lag,
            last_seen: c.last_seen,
        }
    }

    /// Group `infos` (ordered by queue and name) into views, cooperative members (`group.member`
    /// whose group is a consumer of the same queue) under their group.
    pub(crate) fn group(infos: &[ConsumerInfo], retries: &[RetryCount]) -> Vec<ConsumerView> {
        let mut views: Vec<ConsumerView> = Vec::new();
        let mut members: Vec<(String, ConsumerView)> = Vec::new();
        for c in infos {
            let is_member = c.consumer_name.split_once('.').is_some_and(|(group, _)| {
                infos
                    .iter()
                    .any(|g| g.queue_name == c.queue_name && g.consumer_name == group)
            });
            let view = ConsumerView::new(c, retries);
            if is_member {
                let group = c.consumer_name.split_once('.').map(|(g, _)| g.to_owned());
                members.push((group.unwrap_or_default(), view));
            } else {
                views.push(view);
            }
        }
        for (group, m) in members {
            if let Some(g) = views
                .iter_mut()
                .find(|g| g.queue_name == m.queue_name && g.consumer_name == group)
            {
                g.members.push(m);
            }
        }
        views
    }

    /// Rows for a consumer table: the consumer, then its members indented.
    pub(crate) fn add_rows(&self, t: &mut Table, with_queue: bool) {
        let mut add = |v: &ConsumerView, name: String| {
            let mut row = Vec::new();
            if with_queue {
                row.push(one_line(&v.queue_name));
            }
            row.extend([
                name,
                opt_dur(v.lag),
                dur(v.last_seen),
                v.pending_events.to_string(),
                v.retry_events.to_string(),
                opt(v.current_batch),
            ]);
            t.add_row(row);
        };
        add(self, one_line(&self.consumer_name));
        for m in &self.members {
            let short = m
                .consumer_name
                .split_once('.')
                .map_or(m.consumer_name.as_str(), |(_, s)| s);
            add(m, format!("  └ {}", one_line(short)));
        }
    }

    /// Headers matching [`ConsumerView::add_rows`].
    pub(crate) fn headers(with_queue: bool) -> Vec<&'static str> {
        let mut h = Vec::new();
        if with_queue {
            h.push("queue");
        }
        h.extend(["consumer", "lag", "last seen", "pending", "retry", "batch"]);
        h
    }
}

/// A queue's stored configuration, for JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigView {
    pub(crate) queue_name: String,
    pub(crate) ticker_max_count: i32,
    pub(crate) ticker_max_lag_secs: f64,
    pub(crate) ticker_idle_period_secs: f64,
    pub(crate) ticker_paused: bool,
    pub(crate) rotation_period_secs: f64,
    pub(crate) external_ticker: bool,
    pub(crate) disable_insert: bool,
    pub(crate) per_tx_limit: Option<i32>,
}

impl ConfigView {
    /// The view of `c` for queue `queue_name`.
    pub(crate) fn new(queue_name: &str, c: &StoredQueueConfig) -> ConfigView {
        ConfigView {
            queue_name: queue_name.to_owned(),
            ticker_max_count: c.ticker_max_count,
            ticker_max_lag_secs: secs(c.ticker_max_lag),
            ticker_idle_period_secs: secs(c.ticker_idle_period),
            ticker_paused: c.ticker_paused,
            rotation_period_secs: secs(c.rotation_period),
            external_ticker: c.external_ticker,
            disable_insert: c.disable_insert,
            per_tx_limit: c.per_tx_limit,
        }
    }

    /// Key/value rows for people, keys as `queue config` accepts them.
    pub(crate) fn rows(c: &StoredQueueConfig) -> Vec<(&'static str, String)> {
        vec![
            ("ticker_max_count", c.ticker_max_count.to_string()),
            ("ticker_max_lag", dur(c.ticker_max_lag)),
            ("ticker_idle_period", dur(c.ticker_idle_period)),
            ("ticker_paused", c.ticker_paused.to_string()),
            ("rotation_period", dur(c.rotation_period)),
            ("external_ticker", c.external_ticker.to_string()),
            ("disable_insert", c.disable_insert.to_string()),
            (
                "per_tx_limit",
                c.per_tx_limit.map_or("none".to_owned(), |n| n.to_string()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(dur(Duration::from_micros(1_234_567)), "1s 234ms");
        assert_eq!(dur(Duration::from_millis(75_500)), "1m 15s");
        assert_eq!(dur(Duration::ZERO), "0s");
    }

    #[test]
    fn one_line_escapes() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(one_line("ünïcode-名前"), "ünïcode-名前");
        assert_eq!(one_line("evil\x1b[2J"), "evil\\u{1b}[2J");
        assert_eq!(
            one_line("a\u{202e}b\u{200b}c\u{feff}"),
            "a\\u{202e}b\\u{200b}c\\u{feff}"
        );
        assert_eq!(one_line("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
    }

    #[test]
    fn printable_keeps_line_breaks_only() {
        assert_eq!(printable("a\nb\x1b[Hc"), "a\nb\\u{1b}[Hc");
    }
}
