//! Typed events: JSON payloads with an event type and extras taken from the value.

use pgq_core::NewEvent;
use serde::Serialize;

use crate::error::{Error, Result};

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

/// A payload type that knows its event type and, optionally, its extras.
///
/// ```
/// use pgq_producer::{Extras, TypedEvent};
///
/// #[derive(serde::Serialize)]
/// struct OrderCreated { id: i64, customer: String }
///
/// impl TypedEvent for OrderCreated {
///     const EVENT_TYPE: &'static str = "order.created";
///     fn extras(&self) -> Extras {
///         Extras { extra1: Some(self.customer.clone()), ..Default::default() }
///     }
/// }
///
/// let ev = OrderCreated { id: 7, customer: "acme".into() }.to_event().unwrap();
/// assert_eq!(ev.ev_type, "order.created");
/// assert_eq!(ev.ev_data, r#"{"id":7,"customer":"acme"}"#);
/// assert_eq!(ev.extra1.as_deref(), Some("acme"));
/// ```
pub trait TypedEvent: Serialize {
    /// The event type (`ev_type`) of every event of this payload type.
    const EVENT_TYPE: &'static str;

    /// Extras taken from the value's fields; none by default.
    fn extras(&self) -> Extras {
        Extras::default()
    }

    /// The event: [`Self::EVENT_TYPE`], the value as JSON, and [`Self::extras`].
    fn to_event(&self) -> Result<NewEvent> {
        Ok(self.extras().apply(json_event(Self::EVENT_TYPE, self)?))
    }
}

/// An event of type `ev_type` whose payload is `value` as JSON. The JSON never contains a NUL
/// byte (serde_json escapes it), so only the type can be refused for one.
pub fn json_event<T: Serialize + ?Sized>(ev_type: &str, value: &T) -> Result<NewEvent> {
    let data = serde_json::to_string(value).map_err(|source| Error::Serialize {
        ev_type: ev_type.to_owned(),
        source,
    })?;
    Ok(NewEvent::new(ev_type, data))
}
