//! Producing events: single inserts, the set-based insert and the COPY bulk path.
//!
//! Every function runs in the executor it is given, so events commit or roll back with the
//! caller's transaction. Roles: [`insert_event`], [`insert_event_ext`] and [`insert_events`]
//! (without event times) need `pgq_writer`; [`insert_event_raw`], [`insert_events`] with event
//! times, and [`copy_events`] need `pgq_admin`.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_core::Stream;
use futures_util::StreamExt;
use sqlx::{PgConnection, PgExecutor};

use crate::error::{Error, FieldProblem, Op, Result, ResultExt};
use crate::ident::quote_fqname;
use crate::name::QueueName;
use crate::queue::{queue_not_found, with_queue};
use crate::types::{EventId, NewEvent};

/// The largest text value PostgreSQL stores in one field (1 GiB less one byte).
pub const MAX_FIELD_BYTES: usize = (1 << 30) - 1;

const INSERT: Op = Op::writer("insert_event");
const INSERT_MANY: Op = Op::writer("insert_events");
const INSERT_RAW: Op = Op::admin("insert_event_raw");
const COPY: Op = Op::admin("copy_events");

/// What PostgreSQL cannot hold in a text value: a value over the field limit
/// ([`MAX_FIELD_BYTES`]), a NUL byte. `None` when it can hold `value`.
pub fn text_problem(value: &str) -> Option<FieldProblem> {
    if value.len() > MAX_FIELD_BYTES {
        Some(FieldProblem::TooLarge { len: value.len() })
    } else if value.as_bytes().contains(&0) {
        Some(FieldProblem::NulByte)
    } else {
        None
    }
}

/// Check a text value for what PostgreSQL cannot hold: NUL bytes and values over the field limit.
pub(crate) fn check_text(op_name: &'static str, field: &str, value: &str) -> Result<()> {
    match text_problem(value) {
        None => Ok(()),
        Some(problem) => Err(Error::invalid_input(
            Op::public(op_name),
            format!("{field} {problem}"),
        )),
    }
}

const FIELD_NAMES: [&str; 6] = ["ev_type", "ev_data", "extra1", "extra2", "extra3", "extra4"];

/// Check every text field of event `index` ([`Error::InvalidEventField`] names the first bad
/// one).
fn check_fields<'a>(
    op: Op,
    index: u64,
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Result<()> {
    for (field, value) in fields {
        if let Some(problem) = value.and_then(text_problem) {
            return Err(Error::InvalidEventField {
                op: op.name,
                index,
                field,
                problem,
            });
        }
    }
    Ok(())
}

fn check_event(op: Op, index: u64, ev: &NewEvent) -> Result<()> {
    check_fields(op, index, ev.named_fields())
}

/// Insert one event with a type and a payload (`pgq.insert_event(queue, type, data)`).
///
/// Needs `pgq_writer`.
pub async fn insert_event<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    ev_type: &str,
    ev_data: &str,
) -> Result<EventId> {
    check_text(INSERT.name, "ev_type", ev_type)?;
    check_text(INSERT.name, "ev_data", ev_data)?;
    let id = sqlx::query_scalar!(
        r#"select pgq.insert_event($1, $2, $3) as "id!""#,
        queue.as_str(),
        ev_type,
        ev_data
    )
    .fetch_one(ex)
    .await
    .op(INSERT)
    .map_err(|e| with_queue(e, queue))?;
    Ok(EventId(id))
}

/// Insert one event with extras (`pgq.insert_event` with seven arguments).
///
/// The event time is the insert time; an event with [`NewEvent::time`] set is refused here (use
/// [`insert_event_raw`] or [`copy_events`], which need `pgq_admin`). Needs `pgq_writer`.
pub async fn insert_event_ext<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    ev: &NewEvent,
) -> Result<EventId> {
    check_event(INSERT, 0, ev)?;
    if ev.time.is_some() {
        return Err(Error::invalid_input(
            INSERT,
            "an explicit event time needs insert_event_raw or copy_events (pgq_admin)",
        ));
    }
    let id = sqlx::query_scalar!(
        r#"select pgq.insert_event($1, $2, $3, $4, $5, $6, $7) as "id!""#,
        queue.as_str(),
        ev.ev_type,
        ev.ev_data,
        ev.extra1,
        ev.extra2,
        ev.extra3,
        ev.extra4
    )
    .fetch_one(ex)
    .await
    .op(INSERT)
    .map_err(|e| with_queue(e, queue))?;
    Ok(EventId(id))
}

/// Every column `pgq.insert_event_raw` accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Event id; `None` takes the next value of the queue's sequence.
    pub ev_id: Option<i64>,
    /// Event time.
    pub ev_time: DateTime<Utc>,
    /// Owning subscription (retry events are owned by one consumer).
    pub ev_owner: Option<i32>,
    /// Retry count.
    pub ev_retry: Option<i32>,
    /// Type.
    pub ev_type: Option<String>,
    /// Payload.
    pub ev_data: Option<String>,
    /// Extra 1.
    pub ev_extra1: Option<String>,
    /// Extra 2.
    pub ev_extra2: Option<String>,
    /// Extra 3.
    pub ev_extra3: Option<String>,
    /// Extra 4.
    pub ev_extra4: Option<String>,
}

/// Insert an event with every column given (`pgq.insert_event_raw`). Needs `pgq_admin`.
pub async fn insert_event_raw<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    ev: &RawEvent,
) -> Result<EventId> {
    let fields = [
        &ev.ev_type,
        &ev.ev_data,
        &ev.ev_extra1,
        &ev.ev_extra2,
        &ev.ev_extra3,
        &ev.ev_extra4,
    ];
    check_fields(
        INSERT_RAW,
        0,
        FIELD_NAMES.into_iter().zip(fields.map(Option::as_deref)),
    )?;
    let id = sqlx::query_scalar!(
        r#"select pgq.insert_event_raw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) as "id!""#,
        queue.as_str(),
        ev.ev_id,
        ev.ev_time,
        ev.ev_owner,
        ev.ev_retry,
        ev.ev_type,
        ev.ev_data,
        ev.ev_extra1,
        ev.ev_extra2,
        ev.ev_extra3,
        ev.ev_extra4
    )
    .fetch_one(ex)
    .await
    .op(INSERT_RAW)
    .map_err(|e| with_queue(e, queue))?;
    Ok(EventId(id))
}

/// The events as columns, borrowed; an extra column that is all NULL is left out (`None`).
struct Columns<'a> {
    types: Vec<&'a str>,
    data: Vec<&'a str>,
    extras: [Option<Vec<Option<&'a str>>>; 4],
    times: Option<Vec<Option<DateTime<Utc>>>>,
}

fn columns(op: Op, events: &[NewEvent]) -> Result<Columns<'_>> {
    for (index, ev) in (0u64..).zip(events) {
        check_event(op, index, ev)?;
    }
    let extra = |f: fn(&NewEvent) -> Option<&str>| {
        events
            .iter()
            .any(|e| f(e).is_some())
            .then(|| events.iter().map(f).collect())
    };
    Ok(Columns {
        types: events.iter().map(|e| e.ev_type.as_str()).collect(),
        data: events.iter().map(|e| e.ev_data.as_str()).collect(),
        extras: [
            extra(|e| e.extra1.as_deref()),
            extra(|e| e.extra2.as_deref()),
            extra(|e| e.extra3.as_deref()),
            extra(|e| e.extra4.as_deref()),
        ],
        times: events
            .iter()
            .any(|e| e.time.is_some())
            .then(|| events.iter().map(|e| e.time).collect()),
    })
}

/// Insert many events in one statement and one round trip (set-based), returning their ids in
/// order.
///
/// Without event times this calls `pgq_rs.insert_events` (installed by [`crate::install`]): the
/// queue's checks (it exists, inserts are not disabled, the per-transaction limit counting this
/// transaction's earlier events) run once, then one `INSERT ... SELECT` writes every row exactly
/// as `pgq.insert_event` would (sequence id, `now()`, the current transaction id). Needs
/// `pgq_writer`. With explicit [`NewEvent::time`]s the events go through
/// `pgq.insert_event_raw`, which needs `pgq_admin`.
pub async fn insert_events<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    events: &[NewEvent],
) -> Result<Vec<EventId>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let c = columns(INSERT_MANY, events)?;
    let [e1, e2, e3, e4] = &c.extras;
    let ids: Vec<i64> = match &c.times {
        None => sqlx::query_scalar!(
            r#"select pgq_rs.insert_events($1, $2::text[], $3::text[], $4::text[], $5::text[],
                                           $6::text[], $7::text[]) as "ids!""#,
            queue.as_str(),
            &c.types as &[&str],
            &c.data as &[&str],
            e1.as_deref() as Option<&[Option<&str>]>,
            e2.as_deref() as Option<&[Option<&str>]>,
            e3.as_deref() as Option<&[Option<&str>]>,
            e4.as_deref() as Option<&[Option<&str>]>
        )
        .fetch_one(ex)
        .await
        .op(INSERT_MANY),
        Some(times) => sqlx::query_scalar!(
            r#"select array_agg(pgq.insert_event_raw($1, null, coalesce(tm, now()), null, null,
                                                      t, d, x1, x2, x3, x4) order by n) as "ids!"
               from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::timestamptz[]) with ordinality
                    as u(t, d, x1, x2, x3, x4, tm, n)"#,
            queue.as_str(),
            &c.types as &[&str],
            &c.data as &[&str],
            e1.as_deref() as Option<&[Option<&str>]>,
            e2.as_deref() as Option<&[Option<&str>]>,
            e3.as_deref() as Option<&[Option<&str>]>,
            e4.as_deref() as Option<&[Option<&str>]>,
            times as &[Option<DateTime<Utc>>]
        )
        .fetch_one(ex)
        .await
        .op(INSERT_RAW),
    }
    .map_err(|e| with_queue(e, queue))?;
    Ok(ids.into_iter().map(EventId).collect())
}

/// Append `v` to a COPY text-format buffer, escaped.
fn copy_text(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        buf.extend_from_slice(b"\\N");
        return;
    };
    for &b in v.as_bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.push(b),
        }
    }
}

fn copy_row(buf: &mut Vec<u8>, ev: &NewEvent, now: &str) {
    match ev.time {
        Some(t) => buf.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes()),
        None => buf.extend_from_slice(now.as_bytes()),
    }
    for (_, f) in ev.named_fields() {
        buf.push(b'\t');
        copy_text(buf, f);
    }
    buf.push(b'\n');
}

/// How many bytes [`copy_events`] buffers before sending them to the server.
const COPY_CHUNK: usize = 256 * 1024;

/// Bulk-insert events with `COPY` into the queue's current event table, in the caller's
/// transaction (pass a transaction's connection: the events commit or roll back with it).
///
/// The stream is consumed with bounded memory (rows are sent in chunks of 256 KiB). Events
/// without a time get the transaction's timestamp, as `pgq.insert_event` gives them. The queue's
/// `disable_insert` and `per_tx_limit` settings are enforced (the limit counts the events of this
/// call). If the stream yields an error, or an event is invalid, the COPY is aborted and the
/// transaction holds none of its rows (the COPY failed inside it, so it can only roll back).
/// When the returned future is dropped half way, the server discards the COPY too, but the
/// connection is left out of step with the server (a limitation of sqlx's COPY support): close
/// it, or detach it from its pool, instead of reusing it. Returns the number of events inserted.
///
/// Needs `pgq_admin` (COPY writes the event table directly).
pub async fn copy_events<S, E>(conn: &mut PgConnection, queue: &QueueName, events: S) -> Result<u64>
where
    S: Stream<Item = std::result::Result<NewEvent, E>>,
    E: std::fmt::Display,
{
    let target = sqlx::query!(
        r#"select pgq.current_event_table(q.queue_name) as "tbl!", now() as "now!",
                  q.queue_disable_insert, q.queue_per_tx_limit
           from pgq.queue q where q.queue_name = $1"#,
        queue.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
    .op(COPY)?
    .ok_or_else(|| queue_not_found(COPY, queue))?;
    if target.queue_disable_insert {
        return Err(Error::InsertDisabled {
            op: COPY.name,
            source: None,
        });
    }
    let limit = target
        .queue_per_tx_limit
        .map(|l| u64::try_from(l.max(0)).unwrap_or(0));
    let now = target.now.to_rfc3339_opts(SecondsFormat::Micros, true);
    let statement = format!(
        "COPY {} (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) FROM STDIN",
        quote_fqname(&target.tbl)
    );
    let mut copy = conn.copy_in_raw(&statement).await.op(COPY)?;
    let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
    let mut count: u64 = 0;
    let mut events = std::pin::pin!(events);
    while let Some(item) = events.next().await {
        let failure = match item {
            Err(e) => Some(Error::invalid_input(
                COPY,
                format!("event source failed: {e}"),
            )),
            Ok(ev) => match check_event(COPY, count, &ev) {
                Err(e) => Some(e),
                Ok(()) if limit.is_some_and(|l| count + 1 > l) => Some(Error::PerTxLimit {
                    op: COPY.name,
                    message: format!(
                        "queue {queue} allows at most {} events per transaction",
                        limit.unwrap_or(0)
                    ),
                    source: None,
                }),
                Ok(()) => {
                    copy_row(&mut buf, &ev, &now);
                    count += 1;
                    None
                }
            },
        };
        if let Some(err) = failure {
            // Aborting makes the server discard every row of this COPY.
            let _ = copy.abort(err.to_string()).await;
            return Err(err);
        }
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf)).await.op(COPY)?;
            buf.reserve(COPY_CHUNK + 4096);
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await.op(COPY)?;
    }
    copy.finish().await.op(COPY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_escaping() {
        let mut b = Vec::new();
        copy_text(&mut b, Some("a\\b\tc\nd\re"));
        assert_eq!(b, b"a\\\\b\\tc\\nd\\re");
        b.clear();
        copy_text(&mut b, None);
        assert_eq!(b, b"\\N");
    }

    #[test]
    fn nul_and_size_checks() {
        assert!(check_text("t", "ev_data", "ok").is_ok());
        let e = check_text("t", "ev_data", "a\0b").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("NUL"));
    }
}
