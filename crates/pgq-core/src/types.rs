//! Plain data types: ids, events, batch, queue and consumer information, queue configuration.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::types::PgInterval;

macro_rules! id_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $ty(pub i64);

        impl $ty {
            /// The raw id.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self.0)
            }
        }

        impl From<i64> for $ty {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A batch id (`pgq.subscription.sub_batch`).
    BatchId
);
id_type!(
    /// A tick id (`pgq.tick.tick_id`), per queue.
    TickId
);
id_type!(
    /// An event id (`ev_id`), per queue.
    EventId
);
id_type!(
    /// The id of a dead letter (`pgq_rs.dead_letter.dl_id`).
    DeadLetterId
);

/// An event as a consumer reads it: all ten columns of a batch row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Event id, unique within the queue.
    pub ev_id: i64,
    /// When the event was inserted (or the time the producer supplied).
    pub ev_time: DateTime<Utc>,
    /// The inserting transaction's id.
    pub ev_txid: i64,
    /// How many times the event has been retried (`None` on first delivery).
    pub ev_retry: Option<i32>,
    /// Event type.
    pub ev_type: Option<String>,
    /// Payload.
    pub ev_data: Option<String>,
    /// Extra field 1 (the table name for the pgq triggers).
    pub ev_extra1: Option<String>,
    /// Extra field 2.
    pub ev_extra2: Option<String>,
    /// Extra field 3.
    pub ev_extra3: Option<String>,
    /// Extra field 4.
    pub ev_extra4: Option<String>,
}

/// An event row in the column order of pgq's batch queries (`ev_id, ev_time, ev_txid, ev_retry,
/// ev_type, ev_data, ev_extra1..4`), decoded by position: faster than by name, and only used for
/// queries whose column order is pgq's.
pub(crate) type EventRow = (
    i64,
    DateTime<Utc>,
    i64,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Event {
        Event {
            ev_id: r.0,
            ev_time: r.1,
            ev_txid: r.2,
            ev_retry: r.3,
            ev_type: r.4,
            ev_data: r.5,
            ev_extra1: r.6,
            ev_extra2: r.7,
            ev_extra3: r.8,
            ev_extra4: r.9,
        }
    }
}

impl Event {
    /// The event id as a typed id.
    pub fn id(&self) -> EventId {
        EventId(self.ev_id)
    }

    /// The retry count, 0 on first delivery.
    pub fn retry_count(&self) -> i32 {
        self.ev_retry.unwrap_or(0)
    }
}

/// An event to insert.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEvent {
    /// Event type.
    pub ev_type: String,
    /// Payload.
    pub ev_data: String,
    /// Extra field 1.
    #[serde(default)]
    pub extra1: Option<String>,
    /// Extra field 2.
    #[serde(default)]
    pub extra2: Option<String>,
    /// Extra field 3.
    #[serde(default)]
    pub extra3: Option<String>,
    /// Extra field 4.
    #[serde(default)]
    pub extra4: Option<String>,
    /// Event time; `None` means the insert time. Setting it needs `pgq_admin` (raw insert or COPY).
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

impl NewEvent {
    /// An event with a type and a payload.
    pub fn new(ev_type: impl Into<String>, ev_data: impl Into<String>) -> Self {
        NewEvent {
            ev_type: ev_type.into(),
            ev_data: ev_data.into(),
            ..Default::default()
        }
    }

    /// Set extra1.
    pub fn extra1(mut self, v: impl Into<String>) -> Self {
        self.extra1 = Some(v.into());
        self
    }

    /// Set extra2.
    pub fn extra2(mut self, v: impl Into<String>) -> Self {
        self.extra2 = Some(v.into());
        self
    }

    /// Set extra3.
    pub fn extra3(mut self, v: impl Into<String>) -> Self {
        self.extra3 = Some(v.into());
        self
    }

    /// Set extra4.
    pub fn extra4(mut self, v: impl Into<String>) -> Self {
        self.extra4 = Some(v.into());
        self
    }

    /// Set the event time.
    pub fn time(mut self, t: DateTime<Utc>) -> Self {
        self.time = Some(t);
        self
    }

    /// The six text fields with their names (`ev_type`, `ev_data`, `extra1`..`extra4`), in
    /// column order.
    pub fn named_fields(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("ev_type", Some(self.ev_type.as_str())),
            ("ev_data", Some(self.ev_data.as_str())),
            ("extra1", self.extra1.as_deref()),
            ("extra2", self.extra2.as_deref()),
            ("extra3", self.extra3.as_deref()),
            ("extra4", self.extra4.as_deref()),
        ]
    }
}

/// A batch as returned by `next_batch_info` / `next_batch_custom`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchInfo {
    /// The batch id.
    pub batch_id: BatchId,
    /// The tick that ends the batch.
    pub cur_tick_id: TickId,
    /// The tick that starts the batch.
    pub prev_tick_id: TickId,
    /// Time of the ending tick.
    pub cur_tick_time: DateTime<Utc>,
    /// Time of the starting tick.
    pub prev_tick_time: DateTime<Utc>,
    /// Event sequence value at the ending tick.
    pub cur_tick_event_seq: i64,
    /// Event sequence value at the starting tick.
    pub prev_tick_event_seq: i64,
}

impl BatchInfo {
    /// Upper bound of the number of events in the batch (sequence difference; retried events and
    /// rolled back ids make the real count differ).
    pub fn estimated_events(&self) -> i64 {
        (self.cur_tick_event_seq - self.prev_tick_event_seq).max(0)
    }
}

/// Detailed batch information (`pgq.get_batch_info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchDetails {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name.
    pub consumer_name: String,
    /// Time of the starting tick.
    pub batch_start: DateTime<Utc>,
    /// Time of the ending tick.
    pub batch_end: DateTime<Utc>,
    /// The starting tick.
    pub prev_tick_id: TickId,
    /// The ending tick.
    pub tick_id: TickId,
    /// How far behind now the batch end is.
    pub lag: Duration,
    /// Event sequence value at the starting tick.
    pub seq_start: i64,
    /// Event sequence value at the ending tick.
    pub seq_end: i64,
}

/// Queue information (`pgq.get_queue_info`), every column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueInfo {
    /// Queue name.
    pub queue_name: String,
    /// Number of rotated event tables.
    pub queue_ntables: i32,
    /// Current event table index.
    pub queue_cur_table: i32,
    /// How often tables are rotated.
    pub queue_rotation_period: Duration,
    /// Last rotation time.
    pub queue_switch_time: DateTime<Utc>,
    /// Ticks come from outside (`pgq.ticker(queue, id, time, seq)`).
    pub queue_external_ticker: bool,
    /// Ticking paused.
    pub queue_ticker_paused: bool,
    /// Tick after this many events.
    pub queue_ticker_max_count: i32,
    /// Tick at least this often when there are events.
    pub queue_ticker_max_lag: Duration,
    /// Tick at least this often when idle.
    pub queue_ticker_idle_period: Duration,
    /// Time since the last tick.
    pub ticker_lag: Duration,
    /// Events per second over the last ticks (`None` when not computable).
    pub ev_per_sec: Option<f64>,
    /// Events since the last tick.
    pub ev_new: i64,
    /// The last tick id.
    pub last_tick_id: Option<TickId>,
}

/// Consumer information (`pgq.get_consumer_info`), every column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerInfo {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name (`group.member` for cooperative members).
    pub consumer_name: String,
    /// Time from the consumer's last finished tick to now (`None` for an idle cooperative
    /// member, which has no position of its own).
    pub lag: Option<Duration>,
    /// Time since the consumer last finished a batch.
    pub last_seen: Duration,
    /// The last finished tick (`None` for an idle cooperative member).
    pub last_tick: Option<TickId>,
    /// The batch in progress, if any.
    pub current_batch: Option<BatchId>,
    /// The ending tick of the batch in progress.
    pub next_tick: Option<TickId>,
    /// Events inserted after the consumer's position (estimate from sequences).
    pub pending_events: i64,
}

/// A maintenance operation returned by `pgq.maint_operations()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MaintOperation {
    /// Function (or `vacuum`) to run.
    pub func_name: String,
    /// Its argument, if any.
    pub func_arg: Option<String>,
}

/// Typed queue configuration. `None` fields are left unchanged by [`crate::set_queue_config`].
///
/// The first six keys go through `pgq.set_queue_config`; `disable_insert` and `per_tx_limit` are
/// columns pgq reads but has no setter for, so they are updated directly (both need `pgq_admin`).
///
/// Durations must be at most [`QueueConfig::MAX_DURATION`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    /// Tick after this many events (default 500).
    pub ticker_max_count: Option<i32>,
    /// Tick at least this often when there are events (default 3 s).
    pub ticker_max_lag: Option<Duration>,
    /// Tick at least this often when idle (default 1 min).
    pub ticker_idle_period: Option<Duration>,
    /// Pause ticking.
    pub ticker_paused: Option<bool>,
    /// Rotate event tables this often (default 2 h).
    pub rotation_period: Option<Duration>,
    /// Ticks come from an external source.
    pub external_ticker: Option<bool>,
    /// Refuse inserts.
    pub disable_insert: Option<bool>,
    /// Most events one transaction may insert; `Some(None)` removes the limit.
    pub per_tx_limit: Option<Option<i32>>,
}

impl QueueConfig {
    /// The longest duration a queue setting accepts: 100 years (36 500 days). pgq adds these
    /// durations to timestamps (`now()` plus the rotation period, for example), which must stay
    /// within PostgreSQL's timestamp range.
    pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);
}

/// A queue's full stored configuration (what [`crate::get_queue_config`] reads).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredQueueConfig {
    /// Tick after this many events.
    pub ticker_max_count: i32,
    /// Tick at least this often when there are events.
    pub ticker_max_lag: Duration,
    /// Tick at least this often when idle.
    pub ticker_idle_period: Duration,
    /// Ticking paused.
    pub ticker_paused: bool,
    /// Rotation period.
    pub rotation_period: Duration,
    /// External ticker.
    pub external_ticker: bool,
    /// Inserts refused.
    pub disable_insert: bool,
    /// Per-transaction limit.
    pub per_tx_limit: Option<i32>,
}

/// Convert a PostgreSQL interval to a [`Duration`] (months count as 30 days; negative is zero).
pub fn interval_to_duration(iv: &PgInterval) -> Duration {
    let days = i64::from(iv.months) * 30 + i64::from(iv.days);
    let micros = days
        .saturating_mul(86_400_000_000)
        .saturating_add(iv.microseconds);
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Convert a [`Duration`] to a PostgreSQL interval (microsecond precision).
pub fn duration_to_interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn opt_interval(iv: Option<PgInterval>) -> Duration {
    iv.as_ref().map(interval_to_duration).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_round_trip() {
        let d = Duration::from_millis(1500);
        assert_eq!(interval_to_duration(&duration_to_interval(d)), d);
        let iv = PgInterval {
            months: 1,
            days: 1,
            microseconds: -1,
        };
        assert_eq!(
            interval_to_duration(&iv),
            Duration::from_micros(31 * 86_400_000_000 - 1)
        );
        let neg = PgInterval {
            months: 0,
            days: 0,
            microseconds: -5,
        };
        assert_eq!(interval_to_duration(&neg), Duration::ZERO);
    }
}
