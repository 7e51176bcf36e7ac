//! Cooperative consumption: the members of a group share one consumer's position and split its
//! batches between them (the `pgq_coop` schema our migrations install, compatible with python3-pgq's
//! `CoopConsumer`).
//!
//! A [`CoopConsumer`] is a [`Consumer`] whose [`BatchSource`] is a [`CoopMember`]: everything a
//! plain consumer has (run loop, handlers, retries, dead letters, exactly-once, wakeups, shutdown)
//! works the same, plus:
//!
//! - **Heartbeat**: while the run loop holds a batch, a background task touches the member on a
//!   connection of its own every [`heartbeat_interval`](ConsumerBuilder::heartbeat_interval), so
//!   a slow handler is not taken for dead.
//! - **Takeover**: with a [`dead_interval`](ConsumerBuilder::dead_interval), an idle member takes
//!   over the batch of a member silent for longer than that (a crashed process), under a fresh
//!   batch id: the dead member's id stops working, so its late finish is refused.
//! - **Progress**: with [`stall_heartbeats`](ConsumerBuilder::stall_heartbeats), a member whose
//!   handler has made no progress for that many heartbeats stops touching, so a hung handler's
//!   batch is taken over like a crashed member's.
//! - **Leaving**: on a clean shutdown the member unregisters; a batch it still holds (after
//!   [`Shutdown::Abandon`](crate::Shutdown::Abandon)) goes back to the group, never lost.
//!
//! Retries go to the group: a retried event comes back to whichever member takes the batch it
//! lands in.

use std::time::Duration;

use pgq_core::sqlx::{PgConnection, PgPool};
use pgq_core::{
    BatchHandling, BatchId, BatchInfo, BatchTaker, BatchTuning, ConsumerName, QueueName,
};

use crate::Consumer;
use crate::config::{ConsumerBuilder, Registration};
use crate::error::{Error, Result};
use crate::source::{BatchSource, register_plain};

/// A member of a cooperative consumer group.
pub type CoopConsumer = Consumer<CoopMember>;

/// The heartbeat interval when no dead interval is set.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// The [`BatchSource`] of a cooperative group member: `pgq_coop.next_batch_custom` /
/// `pgq_coop.finish_batch`; the batches are held by the pgq consumer `group.member`. Needs
/// `pgq_reader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoopMember {
    queue: QueueName,
    group: ConsumerName,
    member: ConsumerName,
    /// `group.member`: the pgq consumer that holds the member's batches.
    full: ConsumerName,
    dead_interval: Option<Duration>,
    heartbeat: Option<Duration>,
    stall_heartbeats: Option<u32>,
    unregister_on_shutdown: bool,
}

impl CoopMember {
    /// Member `member` of the cooperative group `group` on `queue`, with no takeover and the
    /// default heartbeat. Names containing `.` are refused, as is a `group.member` name longer
    /// than [`ConsumerName::MAX_LEN`].
    pub fn new(
        queue: QueueName,
        group: ConsumerName,
        member: ConsumerName,
    ) -> pgq_core::Result<CoopMember> {
        let m = CoopMember::unchecked(queue, group, member);
        m.check()?;
        Ok(m)
    }

    /// The member, its names checked later by [`CoopMember::check`] (the builder reports bad
    /// names when it builds).
    fn unchecked(queue: QueueName, group: ConsumerName, member: ConsumerName) -> CoopMember {
        let full = pgq_core::coop_member_name(&group, &member).unwrap_or_else(|_| group.clone());
        CoopMember {
            queue,
            group,
            member,
            full,
            dead_interval: None,
            heartbeat: None,
            stall_heartbeats: None,
            unregister_on_shutdown: true,
        }
    }

    fn check(&self) -> pgq_core::Result<()> {
        pgq_core::coop_member_name(&self.group, &self.member).map(drop)
    }

    /// The group: the pgq consumer whose position the members share.
    pub fn group(&self) -> &ConsumerName {
        &self.group
    }

    /// The member's name within the group.
    pub fn member(&self) -> &ConsumerName {
        &self.member
    }

    /// The takeover interval (see [`ConsumerBuilder::dead_interval`]).
    pub fn dead_interval(&self) -> Option<Duration> {
        self.dead_interval
    }

    /// How core takes this member's batches.
    fn taker(&self) -> BatchTaker {
        BatchTaker::Member {
            queue: self.queue.clone(),
            group: self.group.clone(),
            member: self.member.clone(),
            dead_interval: self.dead_interval,
        }
    }

    /// The batch this member holds, if any.
    async fn current_batch(&self, pool: &PgPool) -> Result<Option<BatchId>> {
        Ok(pgq_core::get_consumer_info(pool, &self.queue, &self.full)
            .await?
            .and_then(|i| i.current_batch))
    }
}

impl BatchSource for CoopMember {
    fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn consumer(&self) -> &ConsumerName {
        &self.full
    }

    async fn next_batch(
        &self,
        conn: &mut PgConnection,
        tuning: BatchTuning,
    ) -> pgq_core::Result<Option<BatchInfo>> {
        self.taker().next_batch(conn, tuning).await
    }

    /// Registers the member; the group too when it is new, where `registration` says. With
    /// [`Registration::Existing`] the group must be registered already (the member still
    /// registers itself: members come and go).
    ///
    /// First checks that the database's `pgq_coop` is ours ([`pgq_core::CoopFlavor::PgqRs`]):
    /// anything else is refused with [`Error::CoopUnsupported`].
    async fn register(&self, pool: &PgPool, registration: &Registration) -> Result<bool> {
        let (q, g) = (&self.queue, &self.group);
        let flavor = pgq_core::coop_flavor(&mut *pool.acquire().await?).await?;
        if !flavor.as_ref().is_some_and(pgq_core::CoopFlavor::is_ours) {
            return Err(Error::CoopUnsupported { found: flavor });
        }
        if pgq_core::get_consumer_info(pool, q, &self.full)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        if *registration == Registration::Existing {
            if pgq_core::get_consumer_info(pool, q, g).await?.is_none() {
                return Err(Error::Config(format!(
                    "the cooperative group {g} is not registered on queue {q}: register it \
                     (`pgq consumer register {q} {g}`), or build the member with another \
                     Registration"
                )));
            }
        } else {
            register_plain(pool, q, g, registration).await?;
        }
        Ok(pgq_core::coop_register_member(pool, q, g, &self.member).await?)
    }

    /// Unregisters the member. A batch it holds goes back to the group (through the retry
    /// queue), so nothing is lost; the group keeps its position.
    async fn unregister(&self, pool: &PgPool) -> Result<()> {
        let (q, g, m) = (&self.queue, &self.group, &self.member);
        pgq_core::coop_unregister_member(pool, q, g, m, BatchHandling::ReturnToGroup).await?;
        Ok(())
    }

    async fn finish_batch(&self, conn: &mut PgConnection, batch: BatchId) -> pgq_core::Result<()> {
        self.taker().finish_batch(conn, batch).await
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        Some(
            self.heartbeat
                .or(self.dead_interval.map(|d| d / 3))
                .unwrap_or(DEFAULT_HEARTBEAT),
        )
    }

    fn stall_heartbeats(&self) -> Option<u32> {
        self.stall_heartbeats
    }

    async fn touch(&self, conn: &mut PgConnection) -> pgq_core::Result<()> {
        pgq_core::coop_touch(conn, &self.queue, &self.group, &self.member).await
    }

    /// Unregister on a clean shutdown (unless configured not to): with
    /// [`BatchHandling::ReturnToGroup`] when the member still holds a batch, so its events go
    /// back to the group; otherwise with [`BatchHandling::Refuse`], so that a batch the member
    /// unexpectedly holds is never dropped.
    async fn leave(&self, pool: &PgPool) -> Result<()> {
        if !self.unregister_on_shutdown {
            return Ok(());
        }
        let (q, g, m) = (&self.queue, &self.group, &self.member);
        let held = self.current_batch(pool).await?;
        let handling = match held {
            Some(_) => BatchHandling::ReturnToGroup,
            None => BatchHandling::Refuse,
        };
        if pgq_core::coop_unregister_member(pool, q, g, m, handling).await? {
            match held {
                Some(batch) => tracing::info!(
                    queue = %q, group = %g, member = %m, batch = batch.get(),
                    "member left its group; the events of its batch go back to the group"
                ),
                None => {
                    tracing::info!(queue = %q, group = %g, member = %m, "member left its group")
                }
            }
        }
        Ok(())
    }
}

impl CoopConsumer {
    /// Start building member `member` of the cooperative group `group` on `queue`, using
    /// connections of `pool`. The names must not contain `.` (checked by
    /// [`build`](ConsumerBuilder::build)).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgq_consumer::{CoopConsumer, HandlerError, handler_fn};
    /// use pgq_core::{ConsumerName, QueueName};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # async fn demo(pool: pgq_core::sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let member = CoopConsumer::coop_builder(
    ///     pool,
    ///     QueueName::new("orders")?,
    ///     ConsumerName::new("billing")?,   // the group
    ///     ConsumerName::new("worker-1")?,  // this member
    /// )
    /// .dead_interval(Duration::from_secs(60)) // take over batches of members silent for 1 min
    /// .build()?;
    /// let handler = handler_fn(|ev| async move {
    ///     println!("{}", ev.ev_id);
    ///     Ok::<_, HandlerError>(())
    /// });
    /// member.run(handler, CancellationToken::new()).await?;
    /// # Ok(()) }
    /// ```
    pub fn coop_builder(
        pool: PgPool,
        queue: QueueName,
        group: ConsumerName,
        member: ConsumerName,
    ) -> ConsumerBuilder<CoopMember> {
        ConsumerBuilder::with_source(pool, CoopMember::unchecked(queue, group, member))
    }

    /// The group.
    pub fn group(&self) -> &ConsumerName {
        self.source().group()
    }

    /// This member's name within the group.
    pub fn member(&self) -> &ConsumerName {
        self.source().member()
    }

    /// Heartbeat now (the run loop does this by itself while it holds a batch): a member that
    /// drives batches by hand ([`Consumer::next_batch`]) with a long handler calls this more
    /// often than the group's dead interval.
    ///
    /// Needs `pgq_reader`.
    pub async fn touch(&self) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        Ok(self.source().touch(&mut conn).await?)
    }
}

impl ConsumerBuilder<CoopMember> {
    /// Take over the batch of a member that has been silent (no heartbeat, no batch call) for
    /// longer than `interval`, e.g. a process that crashed while holding a batch. The batch
    /// comes under a fresh id with the same events; the dead member's late finish is refused.
    ///
    /// Default: `None`, no takeover — a crashed member's batch waits until that member comes
    /// back under the same name (or is unregistered, which returns its events to the group). Use
    /// the same interval for every member of a group and keep it well above the heartbeat
    /// interval and any pause of a live process.
    pub fn dead_interval(mut self, interval: Duration) -> Self {
        self.source_mut().dead_interval = Some(interval);
        self
    }

    /// How often the run loop touches the member while it handles a batch (default: a third of
    /// the dead interval, or 10 s without one). Must stay below the smallest dead interval any
    /// member of the group uses (python3-pgq members included).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.source_mut().heartbeat = Some(interval);
        self
    }

    /// Let the heartbeat show progress, not just life: when the handler has made no progress
    /// (no event of the batch read or handled) for `heartbeats` heartbeats in a row, the run
    /// loop stops touching the member, so a hung handler's batch is taken over by another member
    /// once it has been silent for the group's [`dead_interval`](Self::dead_interval) (the
    /// takeover is done by the other members: their `dead_interval` counts). Touching resumes if
    /// the handler moves again before that; after a takeover its late finish is refused and its
    /// work rolled back (at-least-once: the new owner handles the batch from its start).
    ///
    /// The time a handler may spend on one event (or, with
    /// [`run_batches`](crate::Consumer::run_batches), between two reads of the batch) is then
    /// about `heartbeats` × [`heartbeat_interval`](Self::heartbeat_interval) plus the dead
    /// interval. Default: `None`, touch for as long as the batch is held (a hung handler holds its
    /// batch until its process stops). Must be at least 1.
    pub fn stall_heartbeats(mut self, heartbeats: u32) -> Self {
        self.source_mut().stall_heartbeats = Some(heartbeats);
        self
    }

    /// Whether the run loop unregisters the member when it stops on shutdown (default `true`).
    /// With `false` the member stays registered, idle, and resumes its batch (if it abandoned
    /// one) when it comes back under the same name.
    pub fn unregister_on_shutdown(mut self, unregister: bool) -> Self {
        self.source_mut().unregister_on_shutdown = unregister;
        self
    }

    /// Build the member (checks the names and the configuration; touches no database).
    pub fn build(mut self) -> Result<CoopConsumer> {
        let source = self.source_mut();
        source.check()?;
        if source.stall_heartbeats == Some(0) {
            return Err(Error::Config("stall_heartbeats must be at least 1".into()));
        }
        if source.dead_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::Config("dead_interval must not be zero".into()));
        }
        let heartbeat = source.heartbeat_interval().unwrap_or(DEFAULT_HEARTBEAT);
        if heartbeat.is_zero() {
            return Err(Error::Config("heartbeat_interval must not be zero".into()));
        }
        if let Some(dead) = source.dead_interval
            && heartbeat >= dead
        {
            return Err(Error::Config(format!(
                "heartbeat_interval ({heartbeat:?}) must be shorter than dead_interval ({dead:?}), \
                 or members handling long batches are taken for dead"
            )));
        }
        self.build_consumer()
    }
}
