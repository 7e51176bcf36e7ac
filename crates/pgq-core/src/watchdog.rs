//! A client-side deadline on the database: how long a program may wait for the database's
//! answers before it takes the connection for dead. On a half-open connection (the network
//! dropped without a FIN, a middlebox hangs) a statement would otherwise wait for its answer
//! forever.
//!
//! One [`Watchdog`] watches a whole sequence of database work (a consumer's run loop, `pgq tail
//! --follow`): [`Watchdog::restart`] counts afresh (the database answered), [`Watchdog::pause`] /
//! [`Watchdog::idle`] stop the count while the program waits for something else (a handler, the
//! next tick), [`Watchdog::guard`] runs work that fails once the count passes the limit.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A deadline on waiting for the database, restarted whenever it answers: how long a program may
/// wait for the database's answers before it takes the connection for dead (on a half-open
/// connection a statement would otherwise wait forever).
///
/// One watchdog watches a whole sequence of database work (a consumer's run loop, `pgq tail
/// --follow`): [`Watchdog::restart`] counts afresh (the database answered), [`Watchdog::pause`] /
/// [`Watchdog::idle`] stop the count while the program waits for something else (a handler, the
/// next tick), [`Watchdog::guard`] runs work that fails once the count passes the limit.
#[derive(Debug)]
pub struct Watchdog {
    limit: Duration,
    /// Since when the program has waited for the database; `None` while it is paused.
    since: Mutex<Option<Instant>>,
}

impl Watchdog {
    /// A watchdog that expires after `limit` of waiting, counting from now.
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            limit,
            since: Mutex::new(Some(Instant::now())),
        }
    }

    /// How long the program may wait for the database.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    fn set(&self, since: Option<Instant>) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    /// The database answered: count afresh from now.
    pub fn restart(&self) {
        self.set(Some(Instant::now()));
    }

    /// Stop counting until the returned guard is dropped (then count afresh): the program waits
    /// for something other than the database's answer.
    #[must_use = "the count restarts when the guard is dropped"]
    pub fn pause(&self) -> WatchdogPause<'_> {
        self.set(None);
        WatchdogPause(self)
    }

    /// Run `fut` (a wait that is not for the database's answer) without counting its time; the
    /// count starts afresh when it ends.
    pub async fn idle<T>(&self, fut: impl Future<Output = T>) -> T {
        let _paused = self.pause();
        fut.await
    }

    /// Resolves once the program has waited for the database for longer than the limit.
    pub async fn expired(&self) {
        loop {
            let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
            let wake = match since {
                Some(t) if t.elapsed() >= self.limit => return,
                Some(t) => t + self.limit,
                // Paused: look again later.
                None => Instant::now() + self.limit,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    /// Run `fut` under the deadline, counting from now: its output, or `None` when the watchdog
    /// expired first (then the connection must not be used again).
    pub async fn guard<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        self.restart();
        tokio::select! {
            r = fut => Some(r),
            () = self.expired() => None,
        }
    }
}

/// A pause of a [`Watchdog`] ([`Watchdog::pause`]): counting starts afresh when it is dropped.
#[derive(Debug)]
pub struct WatchdogPause<'a>(&'a Watchdog);

impl Drop for WatchdogPause<'_> {
    fn drop(&mut self) {
        self.0.restart();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expires_unless_restarted_or_paused() {
        let dog = Watchdog::new(Duration::from_millis(200));
        // Work that answers in time.
        assert_eq!(dog.guard(async { 1 }).await, Some(1));
        // Work that never answers.
        assert_eq!(dog.guard(std::future::pending::<()>()).await, None);
        // Paused: a wait longer than the limit does not count.
        let waited = dog
            .guard(dog.idle(tokio::time::sleep(Duration::from_millis(600))))
            .await;
        assert_eq!(waited, Some(()));
        // Restarted by the answer after the pause: the count starts afresh.
        assert_eq!(dog.guard(async { 2 }).await, Some(2));
    }
}
