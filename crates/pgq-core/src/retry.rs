//! Putting many events of a batch into the retry queue at once.
//!
//! Roles: `pgq_reader`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::consume::batch_ctx;
use crate::error::{Op, Result, ResultExt};
use crate::types::{BatchId, EventId};

const RETRY_MANY: Op = Op::reader("event_retry_many");

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
