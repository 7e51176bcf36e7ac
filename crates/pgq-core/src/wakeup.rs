//! Consumer wakeups (LISTEN/NOTIFY on new ticks) and the consumer runtime's batch primitives:
//! reading a batch through a cursor in chunks, and putting many events into the retry queue at
//! once.
//!
//! **Wakeups.** Our migrations install a trigger on `pgq.tick` that sends `NOTIFY pgq_tick` with
//! the queue name as payload for every new tick, whoever inserts it (pgq-ticker, pgqd, a manual
//! `pgq.ticker()`). PostgreSQL delivers notifications at commit and drops duplicates within one
//! transaction, so a ticker round costs one notification per ticked queue; producers never
//! NOTIFY. A consumer LISTENs on [`TICK_CHANNEL`] ([`tick_listener`]) and keeps polling as a
//! fallback, since notifications sent while its listening connection is down are lost.
//!
//! Roles: listening needs no pgq role; the cursor functions and [`event_retry_many`] need
//! `pgq_reader`.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, PgPool};

use crate::consume::{EventFilter, batch_ctx, filtered_batch_query};
use crate::error::{Error, Op, Result, ResultExt};
use crate::ident::quote_ident;
use crate::name::QueueName;
use crate::types::{BatchId, Event, EventId, EventRow};

/// The channel the `pgq.tick` trigger notifies on; the payload is the queue name.
///
/// A queue name is at most 63 bytes, so it always fits a notification payload; the channel name
/// is fixed, so it fits PostgreSQL's 63-byte identifier limit whatever the queue is called.
pub const TICK_CHANNEL: &str = "pgq_tick";

const LISTEN: Op = Op::public("listen");
const CURSOR: Op = Op::reader("batch_cursor");
const RETRY_MANY: Op = Op::reader("event_retry_many");

/// A [`PgListener`] on `pool` that listens on [`TICK_CHANNEL`].
///
/// The listener holds one connection of `pool` for as long as it lives. When that connection is
/// lost, `try_recv` reconnects and listens again before returning `Ok(None)`: ticks in between
/// were missed, so check for batches then. Needs no pgq role.
pub async fn tick_listener(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.op(LISTEN)?;
    listener.listen(TICK_CHANNEL).await.op(LISTEN)?;
    Ok(listener)
}

/// Whether `notification` announces a new tick of `queue`.
pub fn is_tick_of(notification: &PgNotification, queue: &QueueName) -> bool {
    notification.channel() == TICK_CHANNEL && notification.payload() == queue.as_str()
}

/// Send the tick notification for `queue` by hand (what the `pgq.tick` trigger does), e.g. after
/// ticking a database where the trigger is not installed. Delivered when the transaction commits.
/// Needs no pgq role.
pub async fn notify_tick<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<()> {
    const OP: Op = Op::public("notify_tick");
    sqlx::query!("select pg_notify('pgq_tick', $1)", queue.as_str())
        .execute(ex)
        .await
        .op(OP)?;
    Ok(())
}

/// Whether the `pgq.tick` wakeup trigger is installed in this database (by
/// [`crate::install`]). Without it consumers only wake by polling. Needs no pgq role.
pub async fn tick_trigger_installed<'e>(ex: impl PgExecutor<'e>) -> Result<bool> {
    const OP: Op = Op::public("tick_trigger_installed");
    sqlx::query_scalar!(
        r#"select exists (select 1 from pg_catalog.pg_trigger
                           where tgrelid = to_regclass('pgq.tick')
                             and tgname = 'pgq_rs_tick_notify') as "e!""#
    )
    .fetch_one(ex)
    .await
    .op(OP)
}

/// The cursor name used for `batch` by [`declare_batch_cursor`].
pub fn batch_cursor_name(batch: BatchId) -> String {
    format!("pgq_rs_batch_{}", batch.0)
}

/// Open a cursor over a batch's events in the current transaction, named
/// [`batch_cursor_name`]`(batch)`: the batch's own event query (`pgq.batch_event_sql`), in
/// event id order, with `filter` values bound as parameters. Read it with
/// [`fetch_batch_cursor`]; it closes at the end of the transaction. One round trip
/// (`pgq_rs.open_batch_cursor`, installed by [`crate::install`]).
///
/// `conn` must be inside a transaction (a cursor lives in one): outside of one the cursor is
/// gone when the call returns, and [`fetch_batch_cursor`] says so. Between fetches the connection
/// is free for other statements of the same transaction: the exactly-once path writes there.
///
/// Needs `pgq_reader`.
pub async fn declare_batch_cursor(
    conn: &mut PgConnection,
    batch: BatchId,
    filter: &EventFilter,
) -> Result<()> {
    let (query, binds) = filtered_batch_query(BATCH_SQL_SLOT, filter);
    let [types, extra1, extra2, extra3, extra4] =
        binds.map(|b| b.map(Vec::as_slice)).unwrap_or([&[]; 5]);
    sqlx::query!(
        "select pgq_rs.open_batch_cursor($1, $2, $3, $4, $5, $6, $7, $8)",
        batch.0,
        batch_cursor_name(batch),
        binds.is_some().then_some(query),
        types,
        extra1,
        extra2,
        extra3,
        extra4,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| cursor_error(e, batch))?;
    Ok(())
}

/// Where `pgq_rs.open_batch_cursor` puts the batch's event query in a filtering wrapper.
const BATCH_SQL_SLOT: &str = "{batch_sql}";

/// Fetch the next `count` events from the cursor of [`declare_batch_cursor`]; fewer than `count`
/// (possibly none) means the batch has been read to the end.
///
/// Needs `pgq_reader`.
pub async fn fetch_batch_cursor(
    conn: &mut PgConnection,
    batch: BatchId,
    count: u32,
) -> Result<Vec<Event>> {
    let sql = format!(
        "fetch forward {count} from {}",
        quote_ident(&batch_cursor_name(batch))
    );
    let rows = sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| cursor_error(e, batch))?;
    Ok(rows.into_iter().map(Event::from).collect())
}

fn cursor_error(e: sqlx::Error, batch: BatchId) -> Error {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        // The cursor is gone: opened outside a transaction, or the transaction ended.
        Some("34000") => Error::invalid_input(
            CURSOR,
            "a batch cursor needs a transaction: begin one before opening the batch, and read \
             it before the transaction ends",
        ),
        _ => batch_ctx(Error::from_sqlx(e, CURSOR), batch),
    }
}

/// Put many events of an open batch into the retry queue in one statement
/// (`pgq_rs.event_retry_many`): each comes back at its time, with `ev_retry + 1`, after the
/// ticker's retry step (`maint_retry_events`) and a later tick, as with `pgq.event_retry`. The
/// batch is read once, whatever the number of events (`pgq.event_retry` reads it once per event).
/// Events not in the batch or already in the retry queue are skipped; returns how many were
/// queued. Commit it together with `finish_batch`.
///
/// Needs `pgq_reader`.
pub async fn event_retry_many<'e>(
    ex: impl PgExecutor<'e>,
    batch: BatchId,
    events: &[(EventId, DateTime<Utc>)],
) -> Result<i32> {
    let ids: Vec<i64> = events.iter().map(|(id, _)| id.0).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|(_, t)| *t).collect();
    sqlx::query_scalar!(
        r#"select pgq_rs.event_retry_many($1, $2, $3) as "n!""#,
        batch.0,
        &ids,
        &times
    )
    .fetch_one(ex)
    .await
    .op(RETRY_MANY)
    .map_err(|e| batch_ctx(e, batch))
}
