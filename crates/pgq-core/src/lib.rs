//! # pgq-core
//!
//! The foundation of PgQ for Rust: validated names, typed ids and rows, one error type, and every
//! pgq 3.x SQL function as a typed async function that runs on whatever executor you give it — a
//! pool, a connection, or your own transaction — so events commit with your data.
//!
//! ```no_run
//! use pgq_core::{ConsumerName, NewEvent, QueueName};
//! use futures_util::TryStreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
//! pgq_core::install(&pool).await?;                     // pgq extension + our schema
//! let queue = QueueName::new("orders")?;
//! let consumer = ConsumerName::new("billing")?;
//! pgq_core::create_queue(&pool, &queue).await?;
//! pgq_core::register_consumer(&pool, &queue, &consumer).await?;
//!
//! // Produce inside the application's transaction.
//! let mut tx = pool.begin().await?;
//! pgq_core::insert_events(&mut *tx, &queue, &[NewEvent::new("order.created", r#"{"id":1}"#)]).await?;
//! tx.commit().await?;
//!
//! // A ticker (pgq-ticker or pgqd) closes batches; here we tick by hand.
//! pgq_core::tick_now(&mut *pool.acquire().await?, &queue).await?;
//!
//! // Consume: stream the batch with bounded memory, then finish it.
//! let mut conn = pool.acquire().await?;
//! if let Some(batch) = pgq_core::next_batch_info(&mut *conn, &queue, &consumer).await? {
//!     let mut events =
//!         pgq_core::stream_batch_events(&mut conn, batch.batch_id, &Default::default()).await?;
//!     while let Some(ev) = events.try_next().await? {
//!         println!("{} {:?}", ev.ev_id, ev.ev_data);
//!     }
//!     drop(events);
//!     pgq_core::finish_batch(&mut *conn, batch.batch_id).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! ## Roles
//! Each function's documentation names the pgq role it needs: `pgq_reader` (consume),
//! `pgq_writer` (produce), `pgq_admin` (tick, maintain, manage queues, COPY, raw inserts). A missing
//! privilege is [`ErrorKind::PermissionDenied`] naming that role.
//!
//! ## Errors
//! pgq raises exceptions with free-form messages; they are classified into [`ErrorKind`]s, with
//! the database error kept as the `source`.

#![forbid(unsafe_code)]

mod admin;
mod backend;
mod batch_cursor;
mod chunked;
pub mod connect;
mod consume;
mod consumers;
mod coop;
mod dead_letters;
mod discovery;
pub mod duration;
mod error;
mod held;
mod ident;
mod install;
mod maint;
pub mod name;
mod produce;
mod queue;
mod queue_setting;
pub mod redact;
mod retry;
mod session;
mod sql;
pub mod sqlstate;
mod taker;
mod tick;
mod ticker_sessions;
mod triggers;
mod typed;
mod types;
mod wakeup;
mod watchdog;

pub use admin::{
    ConsumerStats, HorizonHolder, QueueStats, RetryCount, RotationBlocker, consumer_stats,
    has_pgq_role, queue_stats, retry_queue_counts, rotation_blockers, xmin_horizon_holder,
};
pub use backend::{
    Backend, InstallOptions, SQL_BACKEND_REVISION, SQL_BACKEND_VERSION, detect_backend,
};
pub use batch_cursor::{batch_cursor_name, declare_batch_cursor, fetch_batch_cursor};
pub use chunked::{ChunkLimits, event_chunks, insert_events_chunked};
pub use consume::{
    BatchTuning, EventFilter, batch_event_sql, batch_owner, batch_retry, event_retry,
    event_retry_at, event_retry_raw, finish_batch, finish_own_batch, get_batch_cursor,
    get_batch_events, get_batch_info, next_batch, next_batch_custom, next_batch_info,
    require_batch_owner, stream_batch_events,
};
pub use consumers::{
    get_consumer_info, get_consumer_info_all, get_consumer_info_queue, register_consumer,
    register_consumer_at, register_consumer_if_new, require_consumer_info, unregister_consumer,
};
pub use coop::{
    BatchHandling, CoopFlavor, coop_finish_batch, coop_flavor, coop_member_name, coop_next_batch,
    coop_register_member, coop_touch, coop_unregister_member, coop_version,
};
pub use dead_letters::{
    DeadLetter, DeadLetterCount, DeadLetterFilter, DeadLetterSelection, NewDeadLetter, Replayed,
    dead_letter_counts, get_dead_letter, insert_dead_letters, list_dead_letters,
    purge_dead_letters, replay_dead_letters,
};
pub use discovery::{list_databases, pgq_presence, version};
pub use error::{BoxError, Error, ErrorKind, FieldProblem, PgqRole, Result};
pub use held::{
    FinishedNext, RowHint, batch_reach, extend_batch_at, finish_next_batch_at, finish_own_batch_at,
    has_finish_next, next_batch_at, stream_events_beyond,
};
pub use ident::{quote_fqname, quote_ident, quote_literal};
pub use install::{
    CheckReport, InstallReport, OUR_SCHEMA, QueueTickAge, SUPPORTED_PGQ, check,
    embedded_migrations, install, install_with,
};
pub use maint::{
    maint_operations, maint_retry_events, maint_retry_events_all, maint_rotate_tables_step1,
    maint_rotate_tables_step2, maint_tables_to_vacuum, run_maint_operation, vacuum_table,
};
pub use name::{ConsumerName, QueueName, is_invisible_format};
pub use produce::{
    MAX_FIELD_BYTES, RawEvent, copy_events, insert_event, insert_event_ext, insert_event_raw,
    insert_events, text_problem,
};
pub use queue::{
    create_queue, create_queue_with, current_event_table, drop_queue, get_queue_config,
    get_queue_info, get_queue_info_all, pause_queue, queue_exists, require_queue, resume_queue,
    set_insert_disabled, set_queue_config,
};
pub use queue_setting::{
    QUEUE_SETTING_KEYS, QueueSetting, QueueSettingError, parse_setting_duration,
};
pub use retry::event_retry_many;
pub use session::{Keepalives, SessionSettings, configure_session, ping};
pub use taker::{BatchTaker, batch_info};
pub use tick::{
    FastTickPoll, TickRound, TickerFeatures, fast_tick_poll, fast_tick_poll_plain, force_tick,
    lag0_consumers, tick_now, ticker, ticker_external, ticker_features, ticker_queue, ticker_round,
    ticker_round_notify,
};
pub use ticker_sessions::{
    TICKER_LOCK_KEY, TickerSession, backend_pid, end_sessions, live_sessions, other_tickers,
    ticker_lock_holder, ticker_unlock, try_ticker_lock,
};
pub use triggers::{
    PgqTrigger, TriggerDef, TriggerEvents, TriggerFunction, TriggerTiming, create_pgq_triggers,
    drop_pgq_triggers, pgq_triggers, table_primary_key, trigger_ddl,
};
pub use typed::{Extras, TypedError, TypedEvent};
pub use types::{
    BatchDetails, BatchId, BatchInfo, ConsumerInfo, DeadLetterId, Event, EventId, MaintOperation,
    NewEvent, QueueConfig, QueueInfo, StoredQueueConfig, TickId, duration_to_interval,
    interval_to_duration,
};
pub use wakeup::{
    ListenVia, TICK_CHANNEL, TickWakeups, Wake, WakeupSettings, is_tick_of, notify_tick,
    tick_listener, tick_trigger_installed,
};

pub use watchdog::{Watchdog, WatchdogPause};

/// Re-export of the `sqlx` this crate is built on, so callers use the same version.
pub use sqlx;
