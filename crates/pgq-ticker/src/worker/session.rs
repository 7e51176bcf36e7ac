//! What both sessions of a database use: connecting, statements with a client-side deadline,
//! backoff, and stopping in the middle of a statement.

use std::time::Duration;

use pgq_core::sqlx::{Connection as _, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Database};
use crate::state::Stats;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Capped exponential backoff with jitter (each delay is 50–150% of the nominal one).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        nominal.mul_f64(0.5 + fastrand::f64())
    }
}

/// Sleep for `d`; `false` when cancelled first.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}

/// How long a stop waits for a running statement to finish on its own before the statement's
/// session is ended from another session.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long ending such sessions may take (connecting included); within the 10 s a stop waits
/// for the workers.
pub(super) const END_SESSIONS_LIMIT: Duration = Duration::from_secs(6);

/// Run `work` (statements on one session) to its end, unless `stop` is cancelled and it does not
/// end within [`SHUTDOWN_GRACE`]. `None` then: the session is in the middle of a statement and
/// must be ended with [`super::Worker::end_sessions`] (dropping the connection would leave the statement
/// running on the server, where it can still commit, holding its locks until it does).
pub(super) async fn unless_stopped<F: std::future::Future>(
    work: F,
    stop: &CancellationToken,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => Some(out),
        () = stop.cancelled() => tokio::time::timeout(SHUTDOWN_GRACE, work).await.ok(),
    }
}

/// How much longer than its server-side `statement_timeout` the ticker waits for a statement's
/// answer before it takes the connection for dead (half-open: the network dropped without a FIN).
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// The client-side deadline of a statement of a session with `statement_timeout`.
pub(crate) fn deadline(statement_timeout: Duration) -> Duration {
    statement_timeout + DEADLINE_GRACE
}

/// The ticking session's `idle_session_timeout`: the server ends the session (and so releases
/// the ticker lock) when it has heard nothing from it for this long, even when TCP still looks
/// alive (a hung middlebox). The keepalive bound, but at least twice the standby retry period (a
/// standby's session sends a statement every `standby_retry`).
pub(crate) fn tick_idle_timeout(db: &Database, cfg: &Config) -> Duration {
    db.keepalives.dead_after().max(cfg.standby_retry * 2)
}

/// A statement that failed, or got no answer in time.
#[derive(Debug)]
pub(crate) enum StmtError {
    Db(pgq_core::Error),
    NoAnswer(Duration),
}

impl std::fmt::Display for StmtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StmtError::Db(e) => e.fmt(f),
            StmtError::NoAnswer(d) => write!(
                f,
                "no answer from the database within {}s (a half-open connection?); the session \
                 is dropped",
                d.as_secs_f64()
            ),
        }
    }
}

impl StmtError {
    pub(super) fn is_transient(&self) -> bool {
        match self {
            StmtError::Db(e) => e.is_transient(),
            StmtError::NoAnswer(_) => true,
        }
    }
}

/// Await a statement with a client-side deadline: a half-open connection fails it instead of
/// leaving it waiting forever.
pub(crate) async fn within<T>(
    limit: Duration,
    statement: impl std::future::Future<Output = pgq_core::Result<T>>,
) -> Result<T, StmtError> {
    match tokio::time::timeout(limit, statement).await {
        Ok(r) => r.map_err(StmtError::Db),
        Err(_) => Err(StmtError::NoAnswer(limit)),
    }
}

/// Close a session politely, unless that takes longer than a moment (a half-open one never
/// answers): then it is dropped.
pub(crate) async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
}

/// Open a session of `db` with the given `statement_timeout`, its server-side keepalives (see
/// [`pgq_core::configure_session`]) and, when given, `idle_session_timeout`: on the first of
/// its hosts that answers within the connect timeout and matches `target_session_attrs`
/// ([`pgq_core::connect::ConnectTarget::connect_with`]; every reconnect tries them all again).
pub(crate) async fn connect(
    db: &Database,
    statement_timeout: Duration,
    idle_session_timeout: Option<Duration>,
) -> Result<PgConnection, String> {
    let ms = statement_timeout.as_millis().max(1).to_string();
    let target = db
        .target
        .map_options(|o| o.options([("statement_timeout", ms.as_str())]));
    let settings = pgq_core::SessionSettings {
        keepalives: db.keepalives,
        idle_session_timeout,
    };
    target
        .connect_with(&settings)
        .await
        .map_err(|e| pgq_core::redact::redact(&e.to_string()))
}

/// [`connect`], and the session's backend pid (to end it from another session at a stop).
pub(super) async fn connect_with_pid(
    db: &Database,
    statement_timeout: Duration,
    idle_session_timeout: Option<Duration>,
) -> Result<(PgConnection, i32), String> {
    let mut conn = connect(db, statement_timeout, idle_session_timeout).await?;
    match within(
        deadline(statement_timeout),
        pgq_core::backend_pid(&mut conn),
    )
    .await
    {
        Ok(pid) => Ok((conn, pid)),
        Err(e) => {
            close(conn).await;
            Err(format!("could not set up the session: {e}"))
        }
    }
}

/// Count an error of database `db` (in the stats line and `pgq_ticker_errors_total`, labelled
/// `what`) and say it: `what: e`.
pub(super) fn count_error(
    stats: &Stats,
    db: &str,
    what: &str,
    e: impl std::fmt::Display,
) -> String {
    Stats::add(&stats.errors, 1);
    metrics::counter!("pgq_ticker_errors_total", "db" => db.to_owned(), "what" => what.to_owned())
        .increment(1);
    format!("{what}: {e}")
}
