//! Typed events, both ways: a payload type names its event type and extras once
//! ([`TypedEvent`]); producers turn values into events ([`TypedEvent::to_event`]) and consumers
//! turn events back into values ([`Event::decode`]), with a clear error for a wrong type, a NULL
//! payload or JSON that does not fit.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Event, NewEvent};

/// The extra fields of an event (`ev_extra1` .. `ev_extra4`), e.g. a routing key or a table name
/// that consumers filter on without parsing the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// `ev_extra1`.
    pub extra1: Option<String>,
    /// `ev_extra2`.
    pub extra2: Option<String>,
    /// `ev_extra3`.
    pub extra3: Option<String>,
    /// `ev_extra4`.
    pub extra4: Option<String>,
}

impl Extras {
    /// Put these extras on `ev` (fields left `None` here keep the event's values).
    pub fn apply(self, mut ev: NewEvent) -> NewEvent {
        let Extras {
            extra1,
            extra2,
            extra3,
            extra4,
        } = self;
        ev.extra1 = extra1.or(ev.extra1);
        ev.extra2 = extra2.or(ev.extra2);
        ev.extra3 = extra3.or(ev.extra3);
        ev.extra4 = extra4.or(ev.extra4);
        ev
    }
}

/// A payload type that knows its event type and, optionally, its extras: the contract producer
/// and consumer share.
///
/// ```
/// use pgq_core::{Event, Extras, TypedEvent};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct OrderCreated { id: i64, customer: String }
///
/// impl TypedEvent for OrderCreated {
///     const EVENT_TYPE: &'static str = "order.created";
///     fn extras(&self) -> Extras {
///         Extras { extra1: Some(self.customer.clone()), ..Default::default() }
///     }
/// }
///
/// let order = OrderCreated { id: 7, customer: "acme".into() };
/// let ev = order.to_event().unwrap();
/// assert_eq!(ev.ev_type, "order.created");
/// assert_eq!(ev.ev_data, r#"{"id":7,"customer":"acme"}"#);
/// assert_eq!(ev.extra1.as_deref(), Some("acme"));
///
/// // What a consumer receives, decoded back (the type is checked first).
/// let received = Event {
///     ev_id: 1, ev_time: chrono::Utc::now(), ev_txid: 1, ev_retry: None,
///     ev_type: Some(ev.ev_type), ev_data: Some(ev.ev_data),
///     ev_extra1: ev.extra1, ev_extra2: None, ev_extra3: None, ev_extra4: None,
/// };
/// assert_eq!(received.decode::<OrderCreated>().unwrap(), order);
/// ```
pub trait TypedEvent {
    /// The event type (`ev_type`) of every event of this payload type.
    const EVENT_TYPE: &'static str;

    /// Extras taken from the value's fields; none by default.
    fn extras(&self) -> Extras {
        Extras::default()
    }

    /// The event: [`Self::EVENT_TYPE`], the value as JSON, and [`Self::extras`].
    fn to_event(&self) -> Result<NewEvent, TypedError>
    where
        Self: Serialize,
    {
        let data = serde_json::to_string(self).map_err(|source| TypedError::Encode {
            ev_type: Self::EVENT_TYPE.to_owned(),
            source,
        })?;
        Ok(self.extras().apply(NewEvent::new(Self::EVENT_TYPE, data)))
    }
}

/// A typed value could not be made from an event, or an event from a value.
///
/// In a consumer's handler, `ev.decode::<T>()?` turns it into a handler failure, retried and
/// dead-lettered like any other.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The event's type is not the one the payload type expects.
    #[error("event {ev_id}: expected event type {expected:?}, found {found:?}")]
    WrongType {
        /// The event.
        ev_id: i64,
        /// The payload type's [`TypedEvent::EVENT_TYPE`].
        expected: &'static str,
        /// The event's type (`None`: NULL).
        found: Option<String>,
    },
    /// The event has no payload (NULL) to decode.
    #[error("event {ev_id} of type {ev_type:?} has no payload (NULL) to decode")]
    NoPayload {
        /// The event.
        ev_id: i64,
        /// Its type.
        ev_type: Option<String>,
    },
    /// The payload is not JSON of the expected shape.
    #[error("event {ev_id} of type {ev_type:?}: the payload does not decode: {source}")]
    Decode {
        /// The event.
        ev_id: i64,
        /// Its type.
        ev_type: Option<String>,
        /// The JSON error (line and column of the payload).
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("event type {ev_type:?}: the value does not encode as JSON: {source}")]
    Encode {
        /// The event type.
        ev_type: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl Event {
    /// Decode the payload as `T`, after checking the event's type is `T`'s
    /// [`TypedEvent::EVENT_TYPE`]. See [`TypedEvent`].
    pub fn decode<T: TypedEvent + DeserializeOwned>(&self) -> Result<T, TypedError> {
        if self.ev_type.as_deref() != Some(T::EVENT_TYPE) {
            return Err(TypedError::WrongType {
                ev_id: self.ev_id,
                expected: T::EVENT_TYPE,
                found: self.ev_type.clone(),
            });
        }
        self.decode_json()
    }

    /// Decode the payload as JSON into `T`, whatever the event's type.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T, TypedError> {
        let data = self
            .ev_data
            .as_deref()
            .ok_or_else(|| TypedError::NoPayload {
                ev_id: self.ev_id,
                ev_type: self.ev_type.clone(),
            })?;
        serde_json::from_str(data).map_err(|source| TypedError::Decode {
            ev_id: self.ev_id,
            ev_type: self.ev_type.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Paid {
        id: i64,
    }
    impl TypedEvent for Paid {
        const EVENT_TYPE: &'static str = "order.paid";
    }

    fn event(ty: Option<&str>, data: Option<&str>) -> Event {
        Event {
            ev_id: 9,
            ev_time: chrono::Utc::now(),
            ev_txid: 1,
            ev_retry: None,
            ev_type: ty.map(str::to_owned),
            ev_data: data.map(str::to_owned),
            ev_extra1: None,
            ev_extra2: None,
            ev_extra3: None,
            ev_extra4: None,
        }
    }

    #[test]
    fn decode_checks_type_payload_and_shape() {
        let ok = event(Some("order.paid"), Some(r#"{"id":3}"#));
        assert_eq!(ok.decode::<Paid>().unwrap(), Paid { id: 3 });
        let e = event(Some("order.created"), Some(r#"{"id":3}"#))
            .decode::<Paid>()
            .unwrap_err();
        assert!(matches!(e, TypedError::WrongType { ev_id: 9, .. }), "{e}");
        assert!(e.to_string().contains("\"order.paid\""), "{e}");
        let e = event(None, Some("{}")).decode::<Paid>().unwrap_err();
        assert!(matches!(e, TypedError::WrongType { found: None, .. }));
        let e = event(Some("order.paid"), None)
            .decode::<Paid>()
            .unwrap_err();
        assert!(matches!(e, TypedError::NoPayload { .. }), "{e}");
        let e = event(Some("order.paid"), Some(r#"{"id":"x"}"#))
            .decode::<Paid>()
            .unwrap_err();
        assert!(matches!(e, TypedError::Decode { .. }), "{e}");
        assert!(e.to_string().contains("event 9"), "{e}");
        // decode_json ignores the type.
        let any: serde_json::Value = event(Some("other"), Some("[1]")).decode_json().unwrap();
        assert_eq!(any, serde_json::json!([1]));
    }
}
