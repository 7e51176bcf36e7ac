//! Durable dead letters: events a consumer gave up on, kept in our table `pgq_rs.dead_letter`.
//!
//! A dead letter is one row: the queue and consumer it came from, the event as it was last
//! delivered (id, time, txid, type, data, extra1..4 — NULL stays NULL), its retry count, the
//! reason and when it failed. The table is ours, not a pgq queue: rotation and maintenance never
//! touch it, so a dead letter lasts until it is [replayed](replay_dead_letters) into a queue or
//! [purged](purge_dead_letters).
//!
//! Roles: writing ([`insert_dead_letters`], done by a consumer in its batch's transaction) and
//! reading ([`list_dead_letters`], [`get_dead_letter`], [`dead_letter_counts`]) need
//! `pgq_reader`; replay needs `pgq_writer`; purge needs `pgq_admin`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::postgres::types::PgInterval;

use crate::error::{Error, Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::sql::query_subscriptions;
use crate::types::{DeadLetterId, Event, EventId};

const WRITE: Op = Op::reader("insert_dead_letters");
const READ: Op = Op::reader("list_dead_letters");
const REPLAY: Op = Op::writer("replay_dead_letters");
const PURGE: Op = Op::admin("purge_dead_letters");

/// A stored dead letter. Serialized (JSON) with the field names `id`, `queue`, `consumer`,
/// `ev_id`, `ev_time`, `txid`, `type`, `data`, `extra1`..`extra4`, `retry`, `reason`,
/// `failed_at`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its id.
    pub id: DeadLetterId,
    /// The queue the event came from.
    pub queue: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The event's id in that queue.
    pub ev_id: i64,
    /// The event's time.
    pub ev_time: DateTime<Utc>,
    /// The id of the transaction that inserted the event.
    pub txid: Option<i64>,
    /// The event's type.
    #[serde(rename = "type")]
    pub ev_type: Option<String>,
    /// The event's payload.
    pub data: Option<String>,
    /// Extra field 1.
    pub extra1: Option<String>,
    /// Extra field 2.
    pub extra2: Option<String>,
    /// Extra field 3.
    pub extra3: Option<String>,
    /// Extra field 4.
    pub extra4: Option<String>,
    /// How many times the event had been retried.
    pub retry: i32,
    /// Why it was dead-lettered (the handler's last error).
    pub reason: String,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The event as it was last delivered (its retry count as `ev_retry`, `None` when 0).
    pub fn event(&self) -> Event {
        Event {
            ev_id: self.ev_id,
            ev_time: self.ev_time,
            ev_txid: self.txid.unwrap_or_default(),
            ev_retry: (self.retry > 0).then_some(self.retry),
            ev_type: self.ev_type.clone(),
            ev_data: self.data.clone(),
            ev_extra1: self.extra1.clone(),
            ev_extra2: self.extra2.clone(),
            ev_extra3: self.extra3.clone(),
            ev_extra4: self.extra4.clone(),
        }
    }
}

/// One event to dead-letter, with the reason (see [`insert_dead_letters`]).
#[derive(Debug, Clone, Copy)]
pub struct NewDeadLetter<'a> {
    /// The event as the consumer last received it.
    pub event: &'a Event,
    /// Why it is dead-lettered.
    pub reason: &'a str,
}

/// Which dead letters [`list_dead_letters`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only those of this queue.
    pub queue: Option<QueueName>,
    /// Only those of this consumer.
    pub consumer: Option<ConsumerName>,
    /// At most this many (newest first); `None` for all.
    pub limit: Option<u32>,
}

/// Which dead letters [`replay_dead_letters`] and [`purge_dead_letters`] act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterSelection {
    /// These ids; one that does not exist (or is outside the other filters) is an error and
    /// nothing is changed.
    Ids(Vec<DeadLetterId>),
    /// All of them (narrowed by the other filters).
    All,
}

impl DeadLetterSelection {
    fn ids(&self) -> Option<Vec<i64>> {
        match self {
            DeadLetterSelection::Ids(ids) => Some(ids.iter().map(|i| i.0).collect()),
            DeadLetterSelection::All => None,
        }
    }
}

/// A dead letter put back into a queue by [`replay_dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// The dead letter's id (the row is gone).
    pub id: DeadLetterId,
    /// The queue it was put into.
    pub queue: String,
    /// Its new event id there.
    pub ev_id: EventId,
}

/// Dead letters per queue and consumer (see [`dead_letter_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterCount {
    /// Queue name.
    pub queue: String,
    /// Consumer name.
    pub consumer: String,
    /// How many dead letters it has.
    pub count: i64,
    /// When the newest of them failed (`None` when there are none).
    pub newest: Option<DateTime<Utc>>,
}

/// Store dead letters of `consumer` on `queue`, one row per event, in one statement.
///
/// Run it in the batch's transaction (before `finish_batch`) so the dead letters and the batch's
/// end commit together. Needs `pgq_reader`. Returns the new ids in input order.
pub async fn insert_dead_letters<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    consumer: &ConsumerName,
    letters: &[NewDeadLetter<'_>],
) -> Result<Vec<DeadLetterId>> {
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let n = letters.len();
    let mut ev_id = Vec::with_capacity(n);
    let mut ev_time = Vec::with_capacity(n);
    let mut ev_txid = Vec::with_capacity(n);
    let mut retry = Vec::with_capacity(n);
    let (mut ty, mut data) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut extra: [Vec<Option<String>>; 4] = Default::default();
    let mut reason = Vec::with_capacity(n);
    for l in letters {
        let ev = l.event;
        ev_id.push(ev.ev_id);
        ev_time.push(ev.ev_time);
        ev_txid.push(ev.ev_txid);
        retry.push(ev.retry_count());
        ty.push(ev.ev_type.clone());
        data.push(ev.ev_data.clone());
        extra[0].push(ev.ev_extra1.clone());
        extra[1].push(ev.ev_extra2.clone());
        extra[2].push(ev.ev_extra3.clone());
        extra[3].push(ev.ev_extra4.clone());
        reason.push(l.reason.to_owned());
    }
    let [x1, x2, x3, x4] = extra;
    let ids = sqlx::query_scalar!(
        r#"insert into pgq_rs.dead_letter
               (dl_queue, dl_consumer, ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data,
                ev_extra1, ev_extra2, ev_extra3, ev_extra4, dl_reason)
           select $1, $2, u.id, u.t, u.tx, u.r, u.ty, u.d, u.x1, u.x2, u.x3, u.x4, u.reason
           from unnest($3::int8[], $4::timestamptz[], $5::int8[], $6::int4[], $7::text[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                       $13::text[])
                with ordinality as u(id, t, tx, r, ty, d, x1, x2, x3, x4, reason, ord)
           order by u.ord
           returning dl_id"#,
        queue.as_str(),
        consumer.as_str(),
        &ev_id,
        &ev_time,
        &ev_txid,
        &retry,
        &ty as &[Option<String>],
        &data as &[Option<String>],
        &x1 as &[Option<String>],
        &x2 as &[Option<String>],
        &x3 as &[Option<String>],
        &x4 as &[Option<String>],
        &reason,
    )
    .fetch_all(ex)
    .await
    .op(WRITE)?;
    Ok(ids.into_iter().map(DeadLetterId).collect())
}

/// Dead letters, newest first, narrowed by `filter`. Needs `pgq_reader`.
pub async fn list_dead_letters<'e>(
    ex: impl PgExecutor<'e>,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query_as!(
        DeadLetterRow,
        r#"select dl_id, dl_queue, dl_consumer, ev_id, ev_time, ev_txid, ev_retry, ev_type,
                  ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, dl_reason, dl_failed_at
           from pgq_rs.dead_letter
           where ($1::text is null or dl_queue = $1)
             and ($2::text is null or dl_consumer = $2)
           order by dl_id desc
           limit $3"#,
        filter.queue.as_ref().map(QueueName::as_str),
        filter.consumer.as_ref().map(ConsumerName::as_str),
        filter.limit.map(i64::from),
    )
    .fetch_all(ex)
    .await
    .op(READ)?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

/// One dead letter by id (`None` when there is none). Needs `pgq_reader`.
pub async fn get_dead_letter<'e>(
    ex: impl PgExecutor<'e>,
    id: DeadLetterId,
) -> Result<Option<DeadLetter>> {
    let row = sqlx::query_as!(
        DeadLetterRow,
        r#"select dl_id, dl_queue, dl_consumer, ev_id, ev_time, ev_txid, ev_retry, ev_type,
                  ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, dl_reason, dl_failed_at
           from pgq_rs.dead_letter
           where dl_id = $1"#,
        id.0,
    )
    .fetch_optional(ex)
    .await
    .op(READ)?;
    Ok(row.map(DeadLetter::from))
}

/// How many dead letters each queue and consumer has, with the newest's time: every registered
/// consumer (0 when it has none, so a metric drops back to 0 after a purge) and every other
/// queue and consumer that has some; ordered by queue and consumer. Needs `pgq_reader`.
pub async fn dead_letter_counts<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<DeadLetterCount>> {
    let rows = query_subscriptions!(
        query,
        r#", d as (
               select dl_queue, dl_consumer, count(*) as n, max(dl_failed_at) as newest
               from pgq_rs.dead_letter
               group by dl_queue, dl_consumer)
           select coalesce(d.dl_queue, s.queue_name) as "queue!",
                  coalesce(d.dl_consumer, s.co_name) as "consumer!",
                  coalesce(d.n, 0) as "count!",
                  d.newest
           from d full join subscriptions s
             on s.queue_name = d.dl_queue and s.co_name = d.dl_consumer
           order by 1, 2"#
    )
    .fetch_all(ex)
    .await
    .op(READ)?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetterCount {
            queue: r.queue,
            consumer: r.consumer,
            count: r.count,
            newest: r.newest,
        })
        .collect())
}

/// Put dead letters back into a queue as new events and remove them, in one statement: nothing
/// is duplicated, nothing lost. Each event goes to `to`, or to the queue it came from, with its
/// type, data and extra1..4 unchanged (it gets a new event id and time; every consumer of that
/// queue receives it). `queue` and `consumer` narrow the selection.
///
/// An id that matches no dead letter, a queue that does not exist or one with inserts disabled
/// is an error, and then nothing is replayed. Needs `pgq_writer`.
pub async fn replay_dead_letters<'e>(
    ex: impl PgExecutor<'e>,
    selection: &DeadLetterSelection,
    queue: Option<&QueueName>,
    consumer: Option<&ConsumerName>,
    to: Option<&QueueName>,
) -> Result<Vec<Replayed>> {
    let rows = sqlx::query!(
        r#"select dl_id as "dl_id!", queue_name as "queue_name!", ev_id as "ev_id!"
           from pgq_rs.dead_letter_replay($1, $2, $3, $4)"#,
        selection.ids() as Option<Vec<i64>>,
        queue.map(QueueName::as_str),
        consumer.map(ConsumerName::as_str),
        to.map(QueueName::as_str),
    )
    .fetch_all(ex)
    .await
    .op(REPLAY)?;
    Ok(rows
        .into_iter()
        .map(|r| Replayed {
            id: DeadLetterId(r.dl_id),
            queue: r.queue_name,
            ev_id: EventId(r.ev_id),
        })
        .collect())
}

/// Delete dead letters: the selection, narrowed by `queue` and to those that failed more than
/// `older_than` ago. An id that matches no dead letter is an error, and then nothing is deleted.
/// Returns the ids deleted. Needs `pgq_admin`.
pub async fn purge_dead_letters<'e>(
    ex: impl PgExecutor<'e>,
    selection: &DeadLetterSelection,
    queue: Option<&QueueName>,
    older_than: Option<Duration>,
) -> Result<Vec<DeadLetterId>> {
    let older_than = older_than
        .map(|d| {
            PgInterval::try_from(d)
                .map_err(|_| Error::invalid_input(PURGE, format!("age {d:?} is out of range")))
        })
        .transpose()?;
    let ids = sqlx::query_scalar!(
        r#"select p as "p!" from pgq_rs.dead_letter_purge($1, $2, $3) as p"#,
        selection.ids() as Option<Vec<i64>>,
        queue.map(QueueName::as_str),
        older_than,
    )
    .fetch_all(ex)
    .await
    .op(PURGE)?;
    Ok(ids.into_iter().map(DeadLetterId).collect())
}

struct DeadLetterRow {
    dl_id: i64,
    dl_queue: String,
    dl_consumer: String,
    ev_id: i64,
    ev_time: DateTime<Utc>,
    ev_txid: Option<i64>,
    ev_retry: i32,
    ev_type: Option<String>,
    ev_data: Option<String>,
    ev_extra1: Option<String>,
    ev_extra2: Option<String>,
    ev_extra3: Option<String>,
    ev_extra4: Option<String>,
    dl_reason: String,
    dl_failed_at: DateTime<Utc>,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(r: DeadLetterRow) -> Self {
        DeadLetter {
            id: DeadLetterId(r.dl_id),
            queue: r.dl_queue,
            consumer: r.dl_consumer,
            ev_id: r.ev_id,
            ev_time: r.ev_time,
            txid: r.ev_txid,
            ev_type: r.ev_type,
            data: r.ev_data,
            extra1: r.ev_extra1,
            extra2: r.ev_extra2,
            extra3: r.ev_extra3,
            extra4: r.ev_extra4,
            retry: r.ev_retry,
            reason: r.dl_reason,
            failed_at: r.dl_failed_at,
        }
    }
}
