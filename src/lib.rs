//! # pgq — PgQ for Rust
//!
//! The facade over the layered crates: [`core`] (types, errors and every pgq SQL operation),
//! [`producer`], [`consumer`] and [`ticker`]. Applications may depend on this crate, or on the
//! layers they need.
//!
//! ```no_run
//! use pgq::core::{NewEvent, QueueName};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = pgq::core::sqlx::PgPool::connect("postgres://localhost/app").await?;
//! pgq::core::install(&pool).await?;
//! let queue = QueueName::new("orders")?;
//! pgq::core::create_queue(&pool, &queue).await?;
//! let mut tx = pool.begin().await?;
//! pgq::core::insert_events(&mut *tx, &queue, &[NewEvent::new("created", "{}")]).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub use pgq_consumer as consumer;
pub use pgq_core as core;
pub use pgq_producer as producer;
pub use pgq_ticker as ticker;

pub use pgq_core::{ConsumerName, Error, ErrorKind, Event, NewEvent, QueueName};

/// The README's Rust snippets, compiled as doctests so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
