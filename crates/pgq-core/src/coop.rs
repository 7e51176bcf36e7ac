//! Cooperative consumption: members of a group share one consumer's position and split its
//! batches (the `pgq_coop` schema that `install()` provides, compatible with SkyTools pgq_coop).
//!
//! A group is an ordinary consumer; each member appears in pgq as the consumer `group.member`.
//! Group and member names must not contain `.`. Roles: everything here needs `pgq_reader`.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};

use crate::consume::BatchTuning;
use crate::error::{Error, Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::queue::with_queue;
use crate::types::{BatchId, duration_to_interval};

const COOP: Op = Op::reader("pgq_coop");

fn check_part(what: &'static str, name: &ConsumerName) -> Result<()> {
    if name.as_str().contains('.') {
        return Err(Error::InvalidName {
            what,
            value: name.to_string(),
            reason: "must not contain '.' (members appear as 'group.member')",
        });
    }
    Ok(())
}

fn check_names(group: &ConsumerName, member: &ConsumerName) -> Result<()> {
    check_part("cooperative group name", group)?;
    check_part("cooperative member name", member)
}

/// The pgq consumer name of `member` of the cooperative `group`: `group.member`. Group and member
/// names containing `.` are refused, as is a `group.member` longer than
/// [`ConsumerName::MAX_LEN`] ([`crate::ErrorKind::InvalidName`]).
pub fn coop_member_name(group: &ConsumerName, member: &ConsumerName) -> Result<ConsumerName> {
    check_names(group, member)?;
    ConsumerName::new(format!("{group}.{member}"))
}

/// What to do with a member's batch in flight when it unregisters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchHandling {
    /// Refuse to unregister while the member holds a batch.
    #[default]
    Refuse,
    /// Return the batch's events to the group (through the retry queue: they come back after the
    /// retry step and a tick, with their retry count increased).
    ReturnToGroup,
}

/// Register `member` in the cooperative `group` on `queue` (the group is registered as a consumer
/// when new). Returns `true` when the member is new.
///
/// Needs `pgq_reader`.
pub async fn coop_register_member<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    group: &ConsumerName,
    member: &ConsumerName,
) -> Result<bool> {
    check_names(group, member)?;
    let r = sqlx::query_scalar!(
        r#"select pgq_coop.register_subconsumer($1, $2, $3) as "r!""#,
        queue.as_str(),
        group.as_str(),
        member.as_str()
    )
    .fetch_one(ex)
    .await
    .op(COOP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r == 1)
}

/// Unregister a member. Returns `false` when it was not registered.
///
/// Needs `pgq_reader`.
pub async fn coop_unregister_member<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    group: &ConsumerName,
    member: &ConsumerName,
    handling: BatchHandling,
) -> Result<bool> {
    check_names(group, member)?;
    let handling = match handling {
        BatchHandling::Refuse => 0,
        BatchHandling::ReturnToGroup => 1,
    };
    let r = sqlx::query_scalar!(
        r#"select pgq_coop.unregister_subconsumer($1, $2, $3, $4) as "r!""#,
        queue.as_str(),
        group.as_str(),
        member.as_str(),
        handling
    )
    .fetch_one(ex)
    .await
    .op(COOP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r == 1)
}

/// The member's next batch: its own unfinished batch, else (with `dead_interval`) the batch of a
/// member silent for longer than that — handed over under a fresh batch id, so the old id stops
/// working — else a new batch from the group's position honouring `tuning`. `None` when there is
/// nothing to do.
///
/// Needs `pgq_reader`.
pub async fn coop_next_batch<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    group: &ConsumerName,
    member: &ConsumerName,
    tuning: BatchTuning,
    dead_interval: Option<Duration>,
) -> Result<Option<BatchId>> {
    check_names(group, member)?;
    let r = sqlx::query_scalar!(
        r#"select pgq_coop.next_batch_custom($1, $2, $3, $4, $5, $6, $7) as b"#,
        queue.as_str(),
        group.as_str(),
        member.as_str(),
        tuning.min_lag.map(duration_to_interval),
        tuning.min_count,
        tuning.min_interval.map(duration_to_interval),
        dead_interval.map(duration_to_interval)
    )
    .fetch_one(ex)
    .await
    .op(COOP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(r.map(BatchId))
}

/// Finish a member's batch. A batch that is not open — finished, or taken over by another member —
/// is [`crate::ErrorKind::BatchNotFound`]; a plain consumer's batch is refused
/// ([`crate::ErrorKind::InvalidInput`]).
///
/// Needs `pgq_reader`.
pub async fn coop_finish_batch<'e>(ex: impl PgExecutor<'e>, batch: BatchId) -> Result<()> {
    sqlx::query_scalar!(r#"select pgq_coop.finish_batch($1) as "r!""#, batch.0)
        .fetch_one(ex)
        .await
        .op(COOP)
        .map_err(|e| match e {
            Error::BatchNotFound { op, source, .. } => Error::BatchNotFound {
                op,
                batch: batch.0,
                source,
            },
            other => other,
        })?;
    Ok(())
}

/// Heartbeat: mark the member alive, so a long handler is not taken for dead.
///
/// Needs `pgq_reader`.
pub async fn coop_touch<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
    group: &ConsumerName,
    member: &ConsumerName,
) -> Result<()> {
    check_names(group, member)?;
    sqlx::query_scalar!(
        r#"select pgq_coop.touch($1, $2, $3) as "r!""#,
        queue.as_str(),
        group.as_str(),
        member.as_str()
    )
    .fetch_one(ex)
    .await
    .op(COOP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(())
}

/// Which `pgq_coop` a database has. Only [`CoopFlavor::PgqRs`] has the semantics this library's
/// cooperative functions and `pgq-consumer`'s cooperative members rely on (a takeover hands out a
/// fresh batch id, `touch` is a heartbeat, unregistering with a batch returns its events, names
/// containing `.` are refused); the others may look alike but behave differently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CoopFlavor {
    /// The schema our migrations install (`pgq_core::install`), marked by a comment on the
    /// schema that starts with `pgq_rs:`.
    PgqRs {
        /// Its `pgq_coop.version()`.
        version: String,
    },
    /// The SkyTools `pgq_coop` extension (`CREATE EXTENSION pgq_coop`).
    Extension {
        /// The extension's version.
        version: String,
    },
    /// A `pgq_coop` schema installed by other means (SkyTools' SQL loaded by hand, an unmarked
    /// copy), with unknown semantics.
    Other {
        /// Its `pgq_coop.version()`, when it has one.
        version: Option<String>,
    },
}

impl CoopFlavor {
    /// Whether this is our schema, the one cooperative members can run against.
    pub fn is_ours(&self) -> bool {
        matches!(self, CoopFlavor::PgqRs { .. })
    }
}

impl std::fmt::Display for CoopFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoopFlavor::PgqRs { version } => write!(f, "pgq_rs's own schema ({version})"),
            CoopFlavor::Extension { version } => write!(f, "the pgq_coop extension {version}"),
            CoopFlavor::Other { version: Some(v) } => {
                write!(f, "a pgq_coop schema not installed by pgq_rs ({v})")
            }
            CoopFlavor::Other { version: None } => {
                write!(f, "a pgq_coop schema not installed by pgq_rs")
            }
        }
    }
}

/// Which `pgq_coop` is installed, or `None` when there is no `pgq_coop` schema. Needs no pgq role.
pub async fn coop_flavor(conn: &mut PgConnection) -> Result<Option<CoopFlavor>> {
    const OP: Op = Op::public("coop_flavor");
    let r = sqlx::query!(
        r#"select n.oid is not null as "schema!",
                  (select extversion from pg_extension where extname = 'pgq_coop') as ext_version,
                  coalesce(obj_description(n.oid, 'pg_namespace') like 'pgq_rs:%', false)
                      as "marked!"
           from (select 1) one
           left join pg_namespace n on n.nspname = 'pgq_coop'"#
    )
    .fetch_one(&mut *conn)
    .await
    .op(OP)?;
    if let Some(version) = r.ext_version {
        return Ok(Some(CoopFlavor::Extension { version }));
    }
    if !r.schema {
        return Ok(None);
    }
    let version = coop_version(&mut *conn).await?;
    Ok(Some(match (r.marked, version) {
        (true, Some(version)) => CoopFlavor::PgqRs { version },
        (_, version) => CoopFlavor::Other { version },
    }))
}

/// The `pgq_coop` version, or `None` when the schema is not installed. Needs no pgq role.
pub async fn coop_version(conn: &mut PgConnection) -> Result<Option<String>> {
    const OP: Op = Op::public("pgq_coop.version");
    let present =
        sqlx::query_scalar!(r#"select to_regprocedure('pgq_coop.version()') is not null as "p!""#)
            .fetch_one(&mut *conn)
            .await
            .op(OP)?;
    if !present {
        return Ok(None);
    }
    sqlx::query_scalar!(r#"select pgq_coop.version() as "v!""#)
        .fetch_one(&mut *conn)
        .await
        .op(OP)
        .map(Some)
}
