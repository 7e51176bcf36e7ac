//! Reading a batch through a server-side cursor in chunks, inside the batch's transaction (the
//! consumer runtime reads every batch this way).
//!
//! Roles: `pgq_reader`.

use sqlx::{AssertSqlSafe, PgConnection};

use crate::consume::{EventFilter, batch_ctx, filtered_batch_query};
use crate::error::{Error, Op, Result};
use crate::ident::quote_ident;
use crate::types::{BatchId, Event, EventRow};

const CURSOR: Op = Op::reader("batch_cursor");

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
        Some(crate::sqlstate::INVALID_CURSOR_NAME) => Error::invalid_input(
            CURSOR,
            "a batch cursor needs a transaction: begin one before opening the batch, and read \
             it before the transaction ends",
        ),
        _ => batch_ctx(Error::from_sqlx(e, CURSOR), batch),
    }
}
