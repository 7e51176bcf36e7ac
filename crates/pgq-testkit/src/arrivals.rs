//! Deliveries of numbered events, for tests that wait for a series to arrive (a failover test
//! inserts `before-0..` on the primary and `after-0..` on the promoted standby).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgq_core::NewEvent;

/// When each payload first arrived. Clones share the record (one side records from a reader
/// thread or a handler, the test asks).
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<Mutex<BTreeMap<String, Instant>>>);

impl Arrivals {
    /// Note that `payload` arrived now (a payload that arrived before keeps its first time).
    pub fn record(&self, payload: impl Into<String>) {
        self.lock()
            .entry(payload.into())
            .or_insert_with(Instant::now);
    }

    /// How many different payloads arrived.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing arrived yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// When the last of the `n` events of [`numbered_events`]`(_, prefix, n)` arrived; `None`
    /// until every one did.
    pub fn all(&self, prefix: &str, n: usize) -> Option<Instant> {
        let seen = self.lock();
        let times: Vec<Instant> = (0..n)
            .filter_map(|i| seen.get(&format!("{prefix}-{i}")).copied())
            .collect();
        (times.len() == n).then(|| times.into_iter().max().unwrap_or_else(Instant::now))
    }

    /// A check for [`Arrivals::all`]`(prefix, n)` to poll from a loop or another task.
    pub fn watch(&self, prefix: &'static str, n: usize) -> impl Fn() -> Option<Instant> + use<> {
        let seen = self.clone();
        move || seen.all(prefix, n)
    }

    /// Insert the `n` events of [`numbered_events`]`("fo", prefix, n)` into `queue` and wait
    /// until all arrived; panics after [`crate::DEADLINE`] with `what` and `log()` (the tested
    /// process's log). Returns when the last one arrived.
    pub async fn send_and_wait(
        &self,
        pool: &sqlx::PgPool,
        queue: &pgq_core::QueueName,
        prefix: &str,
        n: usize,
        what: &str,
        log: impl Fn() -> String,
    ) -> Instant {
        pgq_core::insert_events(pool, queue, &numbered_events("fo", prefix, n))
            .await
            .expect("insert the events");
        let started = Instant::now();
        loop {
            if let Some(at) = self.all(prefix, n) {
                return at;
            }
            assert!(started.elapsed() < crate::DEADLINE, "{what}\n{}", log());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `n` events of type `ev_type` whose data are `prefix-0` .. `prefix-{n-1}`.
pub fn numbered_events(ev_type: &str, prefix: &str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new(ev_type, format!("{prefix}-{i}")))
        .collect()
}
