//! Sessions that survive half-open connections: the server-side settings every session of ours
//! applies, and the libpq keepalive parameters of a connection string.
//!
//! A network that drops packets without a FIN (a partition, a hung middlebox) leaves both ends
//! of a connection waiting. Two things bound that wait:
//! - **Client side**, every statement the ticker, the consumer run loop and `pgq tail --follow`
//!   send has a deadline of its own; on expiry the connection is dropped, never reused. (sqlx
//!   opens the socket itself and has no TCP keepalive option, so the client socket keeps the
//!   operating system's default; the libpq `keepalives*` parameters are mapped as below.)
//! - **Server side**, [`configure_session`] sets TCP keepalives (`tcp_keepalives_idle`,
//!   `tcp_keepalives_interval`, `tcp_keepalives_count`), `tcp_user_timeout` (PostgreSQL 12+;
//!   the same bound while sent data waits for an acknowledgement) and
//!   `client_connection_check_interval` (PostgreSQL 14+; a running statement notices a dead
//!   client too), and optionally `idle_session_timeout` (PostgreSQL 14+; also ends a session
//!   whose peer still acknowledges TCP but sends nothing, as a hung middlebox does). The server
//!   then ends a partitioned session, and releases its advisory locks (the ticker lock), within
//!   [`Keepalives::dead_after`] plus the check interval.
//!
//! The libpq parameters `keepalives`, `keepalives_idle`, `keepalives_interval` and
//! `keepalives_count` of a connection string ([`Keepalives::from_connstr`]) set the server-side
//! probing (`keepalives=0` leaves the server's own settings alone); the client-side deadlines
//! apply whatever they say.
//!
//! Needs no pgq role: every setting is one a session may change for itself.

use std::time::Duration;

use sqlx::PgConnection;

use crate::error::{Error, Op, Result, ResultExt};

const CONFIGURE: Op = Op::public("configure_session");

/// TCP keepalive probing of a session: after `idle` without traffic, a probe every `interval`;
/// `count` unanswered probes end the connection. Defaults: on, 10 s, 5 s, 3 (a dead peer is
/// noticed within 25 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalives {
    /// Whether to set the server-side keepalive settings at all (libpq `keepalives`; `false`
    /// leaves the server's settings as they are).
    pub enabled: bool,
    /// Idle time before the first probe (libpq `keepalives_idle`; at least 1 s).
    pub idle: Duration,
    /// Time between probes (libpq `keepalives_interval`; at least 1 s).
    pub interval: Duration,
    /// Unanswered probes before the connection is considered dead (libpq `keepalives_count`;
    /// at least 1).
    pub count: u32,
}

impl Default for Keepalives {
    fn default() -> Self {
        Keepalives {
            enabled: true,
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(5),
            count: 3,
        }
    }
}

impl Keepalives {
    /// How long after its last traffic a dead peer is noticed: `idle + interval × count`. Also
    /// the session's `tcp_user_timeout` (how long sent data may wait for an acknowledgement).
    pub fn dead_after(&self) -> Duration {
        self.idle + self.interval * self.count
    }

    /// The defaults, with the libpq keepalive parameters found in `connstr` (a `postgres://`
    /// URL's query, or a libpq `key=value` string) applied: `keepalives` (`0` or `1`),
    /// `keepalives_idle`, `keepalives_interval` (seconds) and `keepalives_count`. Other
    /// parameters are ignored here; a keepalive parameter with a bad value is an error.
    /// ([`ConnectTarget`](crate::connect::ConnectTarget) reads them with everything else.)
    pub fn from_connstr(connstr: &str) -> Result<Keepalives> {
        let pairs = crate::connect::connstr_pairs(connstr)
            .map_err(|e| Error::invalid_input(CONFIGURE, e))?;
        Keepalives::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The defaults, with the libpq keepalive parameters among `params` (keyword, value)
    /// applied; other keywords are ignored.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Keepalives> {
        let mut k = Keepalives::default();
        for (key, value) in params {
            let bad = |what: &str| {
                Error::invalid_input(
                    CONFIGURE,
                    format!("connection parameter {key}={value:?}: {what}"),
                )
            };
            let secs = |v: &str| -> Result<Duration> {
                match v.trim().parse::<u32>() {
                    Ok(0) => Err(bad("must be at least 1 (seconds)")),
                    Ok(n) => Ok(Duration::from_secs(n.into())),
                    Err(_) => Err(bad("must be a whole number of seconds")),
                }
            };
            match key {
                "keepalives" => {
                    k.enabled = match value.trim() {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad("must be 0 or 1")),
                    }
                }
                "keepalives_idle" => k.idle = secs(value)?,
                "keepalives_interval" => k.interval = secs(value)?,
                "keepalives_count" => {
                    k.count = match value.trim().parse::<u32>() {
                        Ok(n) if n >= 1 => n,
                        _ => return Err(bad("must be a whole number, at least 1")),
                    }
                }
                _ => {}
            }
        }
        Ok(k)
    }
}

/// What [`configure_session`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionSettings {
    /// Server-side TCP keepalive probing (and `tcp_user_timeout`,
    /// `client_connection_check_interval`).
    pub keepalives: Keepalives,
    /// `idle_session_timeout` (PostgreSQL 14+): the server ends the session when it has sent no
    /// statement for this long, even when TCP still looks healthy. Only for sessions that
    /// promise to send something more often than that (the ticker's); `None` leaves it alone.
    pub idle_session_timeout: Option<Duration>,
}

impl SessionSettings {
    /// How long the server takes at most to end a session of ours whose client is gone while
    /// the session is idle: the keepalive bound ([`Keepalives::dead_after`]), or the
    /// `idle_session_timeout` when that is shorter. A statement running at that moment adds at
    /// most its own `statement_timeout`; while it runs, `client_connection_check_interval`
    /// notices a dead socket within one interval.
    pub fn server_bound(&self) -> Option<Duration> {
        let keep = self
            .keepalives
            .enabled
            .then(|| self.keepalives.dead_after());
        match (keep, self.idle_session_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().clamp(1, i32::MAX as u128))
}

fn secs(d: Duration) -> String {
    d.as_secs().clamp(1, i32::MAX as u64).to_string()
}

/// Apply `settings` to the session on `conn` (one statement): the server-side keepalives,
/// `tcp_user_timeout` (PostgreSQL 12+), `client_connection_check_interval` (PostgreSQL 14+, one
/// keepalive interval) and, when asked, `idle_session_timeout` (PostgreSQL 14+). Settings the
/// server is too old for are skipped. On a Unix-socket connection PostgreSQL ignores the TCP
/// ones.
///
/// Call it right after connecting (for a pool: `PgPoolOptions::after_connect`). Needs no pgq
/// role.
pub async fn configure_session(conn: &mut PgConnection, settings: &SessionSettings) -> Result<()> {
    match set_session(&mut *conn, settings, true).await {
        // `client_connection_check_interval` is refused where the server's platform cannot
        // check sockets (it needs POLLRDHUP: Linux); do without it there.
        Err(e) if e.sqlstate().as_deref() == Some(crate::sqlstate::INVALID_PARAMETER_VALUE) => {
            set_session(conn, settings, false).await
        }
        r => r,
    }
}

/// Check that the session on `conn` answers: one round trip without a statement, which also
/// shows the server that the session is alive (its `idle_session_timeout` starts again). Needs
/// no pgq role.
pub async fn ping(conn: &mut PgConnection) -> Result<()> {
    const PING: Op = Op::public("ping");
    sqlx::Connection::ping(conn).await.op(PING)
}

async fn set_session(
    conn: &mut PgConnection,
    settings: &SessionSettings,
    check_interval: bool,
) -> Result<()> {
    let k = &settings.keepalives;
    let keep = k.enabled.then_some(());
    sqlx::query!(
        r#"select
             case when $1::text is not null then set_config('tcp_keepalives_idle', $1, false) end as "idle",
             case when $1::text is not null then set_config('tcp_keepalives_interval', $2, false) end as "interval",
             case when $1::text is not null then set_config('tcp_keepalives_count', $3, false) end as "count",
             case when $1::text is not null
                   and current_setting('server_version_num')::int >= 120000
                  then set_config('tcp_user_timeout', $4, false) end as "user_timeout",
             case when $1::text is not null and $7::bool
                   and current_setting('server_version_num')::int >= 140000
                  then set_config('client_connection_check_interval', $5, false) end as "check",
             case when $6::text is not null
                   and current_setting('server_version_num')::int >= 140000
                  then set_config('idle_session_timeout', $6, false) end as "idle_session""#,
        keep.map(|()| secs(k.idle)),
        secs(k.interval),
        k.count.max(1).to_string(),
        ms(k.dead_after()),
        ms(k.interval),
        settings.idle_session_timeout.map(ms),
        check_interval,
    )
    .fetch_one(conn)
    .await
    .op(CONFIGURE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_parameters_from_urls_and_keyword_strings() {
        let k = Keepalives::from_connstr(
            "postgres://u:p@h/db?sslmode=disable&keepalives_idle=2&keepalives_interval=1&keepalives_count=4",
        )
        .unwrap();
        assert_eq!(
            (k.enabled, k.idle, k.interval, k.count),
            (true, Duration::from_secs(2), Duration::from_secs(1), 4)
        );
        assert_eq!(k.dead_after(), Duration::from_secs(6));
        let k = Keepalives::from_connstr("host=h dbname='a b' keepalives = 0 keepalives_idle=7")
            .unwrap();
        assert!(!k.enabled);
        assert_eq!(k.idle, Duration::from_secs(7));
        assert_eq!(
            Keepalives::from_connstr("postgres://h/db").unwrap(),
            Keepalives::default()
        );
        for bad in [
            "keepalives=2",
            "keepalives_idle=0",
            "keepalives_interval=x",
            "postgres://h/db?keepalives_count=0",
        ] {
            let e = Keepalives::from_connstr(bad).unwrap_err();
            assert!(e.to_string().contains("keepalives"), "{bad}: {e}");
        }
    }

    #[test]
    fn server_bound() {
        let mut s = SessionSettings::default();
        assert_eq!(s.server_bound(), Some(Duration::from_secs(25)));
        s.idle_session_timeout = Some(Duration::from_secs(8));
        assert_eq!(s.server_bound(), Some(Duration::from_secs(8)));
        s.keepalives.enabled = false;
        s.idle_session_timeout = None;
        assert_eq!(s.server_bound(), None);
    }
}
