//! # pgq-producer
//!
//! Transactional, typed and bulk event production for [PgQ](https://github.com/pgq/pgq) queues,
//! built on [`pgq_core`]. Events are always inserted in the executor you pass — a pool, a
//! connection or your own transaction — so they commit or roll back with your data.
//!
//! ```no_run
//! use pgq_producer::{Producer, TypedEvent};
//!
//! #[derive(serde::Serialize)]
//! struct OrderCreated { id: i64, total_cents: i64 }
//! impl TypedEvent for OrderCreated { const EVENT_TYPE: &'static str = "order.created"; }
//!
//! # async fn demo(pool: pgq_core::sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let orders = Producer::new(pgq_core::QueueName::new("orders")?);
//!
//! let mut tx = pool.begin().await?;
//! // ... the application's own writes in `tx` ...
//! orders.send_typed(&mut *tx, &OrderCreated { id: 1, total_cents: 990 }).await?;
//! orders.send_json(&mut *tx, "order.note", &serde_json::json!({"id": 1, "note": "gift"})).await?;
//! tx.commit().await?;                       // the events commit with the order, or not at all
//!
//! // Many events: set-based (pgq_writer), or COPY (pgq_admin) for bulk loads.
//! let events: Vec<_> = (2..1000)
//!     .map(|id| OrderCreated { id, total_cents: 100 }.to_event())
//!     .collect::<Result<_, _>>()?;
//! orders.send_batch(&pool, &events).await?;
//! let mut tx = pool.begin().await?;
//! orders.copy_iter(&mut tx, events).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! - [`Producer`]: `send`, `send_json`, `send_typed`, `send_batch`, `copy` (which role each
//!   needs is in its docs; a missing privilege is [`Error::PermissionDenied`] naming the role).
//! - [`TypedEvent`]: a payload type with its event type and extras.
//! - [`ChangeCapture`]: attach pgq's `logutriga` / `jsontriga` / `sqltriga` triggers to a table.
//! - [`Error`] with [`Error::kind`]: every bad input is refused before anything is inserted.

#![forbid(unsafe_code)]

mod cdc;
mod error;
mod producer;
mod typed;

pub use cdc::{ChangeCapture, EventField, captures, detach_queue};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use producer::{DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ROWS, Producer, SendFuture};
pub use typed::{Extras, TypedEvent, json_event};

pub use pgq_core;
pub use pgq_core::{EventId, NewEvent, PgqTrigger, QueueName, TriggerFunction};
pub use tokio_util::sync::CancellationToken;
