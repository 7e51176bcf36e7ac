//! Metrics through the [`metrics`] facade: install any recorder (e.g.
//! `metrics-exporter-prometheus`) and the consumer reports to it. Every metric carries the labels
//! `queue` and `consumer`.

use metrics::{Counter, Gauge, Histogram};

/// Counter: events delivered to the handler (or read through a [`crate::Batch`]).
pub const EVENTS: &str = "pgq_consumer_events_total";
/// Counter: events put into the retry queue.
pub const RETRIES: &str = "pgq_consumer_retries_total";
/// Counter: events sent to the dead-letter destination.
pub const DEAD_LETTERS: &str = "pgq_consumer_dead_letters_total";
/// Counter: batches finished.
pub const BATCHES: &str = "pgq_consumer_batches_total";
/// Histogram: seconds from opening a batch to finishing it.
pub const BATCH_DURATION: &str = "pgq_consumer_batch_duration_seconds";
/// Gauge: seconds between the end tick of the batch being consumed and now.
pub const LAG: &str = "pgq_consumer_lag_seconds";
/// Counter: errors the run loop recovered from (it backs off and reconnects).
pub const ERRORS: &str = "pgq_consumer_errors_total";
/// Counter: times the tick listener re-established its connection.
pub const LISTENER_RECONNECTS: &str = "pgq_consumer_listener_reconnects_total";

fn labels(queue: &str, consumer: &str) -> [(&'static str, String); 2] {
    [
        ("queue", queue.to_owned()),
        ("consumer", consumer.to_owned()),
    ]
}

/// Handles for one consumer's per-batch metrics.
pub(crate) struct BatchMetrics {
    pub(crate) events: Counter,
    pub(crate) retries: Counter,
    pub(crate) dead_letters: Counter,
    pub(crate) batches: Counter,
    pub(crate) duration: Histogram,
    pub(crate) lag: Gauge,
}

impl BatchMetrics {
    pub(crate) fn new(queue: &str, consumer: &str) -> Self {
        let l = labels(queue, consumer);
        BatchMetrics {
            events: metrics::counter!(EVENTS, &l),
            retries: metrics::counter!(RETRIES, &l),
            dead_letters: metrics::counter!(DEAD_LETTERS, &l),
            batches: metrics::counter!(BATCHES, &l),
            duration: metrics::histogram!(BATCH_DURATION, &l),
            lag: metrics::gauge!(LAG, &l),
        }
    }
}

pub(crate) fn error(queue: &str, consumer: &str) {
    metrics::counter!(ERRORS, &labels(queue, consumer)).increment(1);
}

pub(crate) fn listener_reconnect(queue: &str, consumer: &str) {
    metrics::counter!(LISTENER_RECONNECTS, &labels(queue, consumer)).increment(1);
}
