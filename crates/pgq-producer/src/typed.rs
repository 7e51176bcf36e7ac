//! Typed events: JSON payloads with an event type and extras taken from the value. The contract
//! ([`TypedEvent`], [`Extras`]) lives in `pgq-core`, so consumers decode with the same types
//! (`Event::decode`).

use pgq_core::NewEvent;
use serde::Serialize;

use crate::error::{Error, Result};

pub use pgq_core::{Extras, TypedEvent};

/// The event of a typed value: [`TypedEvent::EVENT_TYPE`], the value as JSON, and its extras.
pub(crate) fn typed_event<T: TypedEvent + Serialize>(value: &T) -> Result<NewEvent> {
    Ok(value.extras().apply(json_event(T::EVENT_TYPE, value)?))
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
