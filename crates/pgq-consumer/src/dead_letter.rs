//! Dead letters: events that failed their last retry.
//!
//! By default they go to the durable table `pgq_rs.dead_letter` ([`crate::DeadLetter::Table`];
//! read, replay and purge them with [`pgq_core::list_dead_letters`] and friends or `pgq dlq`). In a dead-letter
//! *queue* ([`crate::DeadLetter::Queue`]) an event keeps its type, payload and extra1..extra3;
//! extra4 holds a JSON object with the reason, the retry count, where it came from and the
//! original extra4 (see [`DeadLetterMeta`]).

use chrono::{DateTime, Utc};
use pgq_core::{Event, NewEvent};
use serde::{Deserialize, Serialize};

/// An event on its way to the dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEvent {
    /// The event as the consumer last received it.
    pub event: Event,
    /// Why it is dead-lettered: the handler's last error.
    pub reason: String,
    /// How many times it was retried before.
    pub retries: i32,
    /// The queue it came from.
    pub queue: String,
    /// The consumer that gave up on it.
    pub consumer: String,
}

/// What a dead-letter queue event carries in extra4 (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterMeta {
    /// Why the event was dead-lettered.
    pub reason: String,
    /// How many times it was retried before.
    pub retries: i32,
    /// The queue it came from.
    pub queue: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Its id in the source queue.
    pub ev_id: i64,
    /// Its original event time.
    pub ev_time: DateTime<Utc>,
    /// Its original event type was NULL (the dead letter's type is then empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ev_type_null: bool,
    /// Its original payload was NULL (the dead letter's payload is then empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ev_data_null: bool,
    /// Its original extra4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ev_extra4: Option<String>,
}

impl DeadLetterMeta {
    /// Read the metadata of an event read from a dead-letter queue (`None` when extra4 is not
    /// dead-letter metadata).
    pub fn from_event(event: &Event) -> Option<DeadLetterMeta> {
        serde_json::from_str(event.ev_extra4.as_deref()?).ok()
    }
}

impl DeadLetterEvent {
    /// The metadata stored with the event in a dead-letter queue.
    pub fn meta(&self) -> DeadLetterMeta {
        DeadLetterMeta {
            reason: self.reason.clone(),
            retries: self.retries,
            queue: self.queue.clone(),
            consumer: self.consumer.clone(),
            ev_id: self.event.ev_id,
            ev_time: self.event.ev_time,
            ev_type_null: self.event.ev_type.is_none(),
            ev_data_null: self.event.ev_data.is_none(),
            ev_extra4: self.event.ev_extra4.clone(),
        }
    }

    /// The event to insert into a dead-letter queue.
    pub fn to_new_event(&self) -> NewEvent {
        let ev = &self.event;
        let meta = serde_json::to_string(&self.meta()).expect("metadata serializes");
        NewEvent {
            ev_type: ev.ev_type.clone().unwrap_or_default(),
            ev_data: ev.ev_data.clone().unwrap_or_default(),
            extra1: ev.ev_extra1.clone(),
            extra2: ev.ev_extra2.clone(),
            extra3: ev.ev_extra3.clone(),
            extra4: Some(meta),
            time: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_extra4() {
        let event = Event {
            ev_id: 7,
            ev_time: Utc::now(),
            ev_txid: 1,
            ev_retry: Some(3),
            ev_type: None,
            ev_data: Some("d".into()),
            ev_extra1: Some("t".into()),
            ev_extra2: None,
            ev_extra3: None,
            ev_extra4: Some("orig".into()),
        };
        let dl = DeadLetterEvent {
            event: event.clone(),
            reason: "boom".into(),
            retries: 3,
            queue: "q".into(),
            consumer: "c".into(),
        };
        let new = dl.to_new_event();
        assert_eq!(new.ev_type, "");
        assert_eq!(new.extra1.as_deref(), Some("t"));
        let stored = Event {
            ev_extra4: new.extra4.clone(),
            ..event
        };
        let meta = DeadLetterMeta::from_event(&stored).unwrap();
        assert_eq!(meta, dl.meta());
        assert!(meta.ev_type_null);
        assert_eq!(meta.ev_extra4.as_deref(), Some("orig"));
    }
}
