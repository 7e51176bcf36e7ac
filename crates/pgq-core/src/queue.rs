//! Queue management: create, drop, configure, inspect, pause and resume.
//!
//! Roles: creating, dropping and configuring queues needs `pgq_admin`; reading queue information
//! needs no pgq role.

use sqlx::{Acquire, PgConnection, PgExecutor};

use crate::error::{Error, Op, Result, ResultExt};
use crate::name::{ConsumerName, QueueName};
use crate::types::{
    QueueConfig, QueueInfo, StoredQueueConfig, TickId, interval_to_duration, opt_interval,
};

const CREATE: Op = Op::admin("create_queue");
const DROP: Op = Op::admin("drop_queue");
const CONFIG: Op = Op::admin("set_queue_config");
const INFO: Op = Op::public("get_queue_info");

/// Create a queue (`pgq.create_queue`). Returns `true` if it was created, `false` if it existed.
///
/// Needs `pgq_admin`.
pub async fn create_queue<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<bool> {
    let r = sqlx::query_scalar!(r#"select pgq.create_queue($1) as "r!""#, queue.as_str())
        .fetch_one(ex)
        .await
        .op(CREATE)?;
    Ok(r == 1)
}

/// Create `queue` with `config` and register `consumers` on it, in one transaction (a savepoint
/// inside the caller's): the consumers see every event produced after this call, including
/// those produced before they first run. Returns `true` if the queue was created.
///
/// Safe to call at every start of a service: when the queue exists already its configuration
/// is left as it is (an operator may have changed it), and only the consumers not yet registered
/// are registered (a registered consumer keeps its position).
///
/// Needs `pgq_admin` (creating and configuring); registering needs `pgq_reader`.
pub async fn create_queue_with(
    conn: &mut PgConnection,
    queue: &QueueName,
    config: &QueueConfig,
    consumers: &[ConsumerName],
) -> Result<bool> {
    let mut tx = conn.begin().await.op(CREATE)?;
    let created = create_queue(&mut *tx, queue).await?;
    if created && *config != QueueConfig::default() {
        set_queue_config(&mut tx, queue, config).await?;
    }
    for consumer in consumers {
        crate::consumers::register_consumer(&mut *tx, queue, consumer).await?;
    }
    tx.commit().await.op(CREATE)?;
    Ok(created)
}

/// Drop a queue (`pgq.drop_queue`). Without `force`, a queue that still has consumers is refused
/// ([`crate::ErrorKind::QueueHasConsumers`]); with `force` its consumers are unregistered first.
///
/// Needs `pgq_admin`.
pub async fn drop_queue<'e>(ex: impl PgExecutor<'e>, queue: &QueueName, force: bool) -> Result<()> {
    sqlx::query_scalar!(
        r#"select pgq.drop_queue($1, $2) as "r!""#,
        queue.as_str(),
        force
    )
    .fetch_one(ex)
    .await
    .op(DROP)
    .map_err(|e| with_queue(e, queue))?;
    Ok(())
}

pub(crate) fn with_queue(e: Error, q: &QueueName) -> Error {
    match e {
        Error::QueueNotFound { op, source, .. } => Error::QueueNotFound {
            op,
            queue: Some(q.to_string()),
            source,
        },
        other => other,
    }
}

pub(crate) fn queue_not_found(op: Op, q: &QueueName) -> Error {
    Error::QueueNotFound {
        op: op.name,
        queue: Some(q.to_string()),
        source: None,
    }
}

fn micros(d: std::time::Duration) -> String {
    format!("{} microseconds", d.as_micros())
}

/// Change a queue's configuration: every `Some` field of `config` is set, the others are left as
/// they are. All changes apply in one transaction (a savepoint inside the caller's transaction), so
/// a bad value changes nothing.
///
/// Needs `pgq_admin`.
pub async fn set_queue_config(
    conn: &mut PgConnection,
    queue: &QueueName,
    config: &QueueConfig,
) -> Result<()> {
    config
        .check()
        .map_err(|e| Error::invalid_input(CONFIG, e.to_string()))?;
    let mut keys: Vec<&str> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    if let Some(n) = config.ticker_max_count {
        keys.push("ticker_max_count");
        values.push(n.to_string());
    }
    if let Some(d) = config.ticker_max_lag {
        keys.push("ticker_max_lag");
        values.push(micros(d));
    }
    if let Some(d) = config.ticker_idle_period {
        keys.push("ticker_idle_period");
        values.push(micros(d));
    }
    if let Some(b) = config.ticker_paused {
        keys.push("ticker_paused");
        values.push(b.to_string());
    }
    if let Some(d) = config.rotation_period {
        keys.push("rotation_period");
        values.push(micros(d));
    }
    if let Some(b) = config.external_ticker {
        keys.push("external_ticker");
        values.push(b.to_string());
    }
    let mut tx = conn.begin().await.op(CONFIG)?;
    if !queue_exists(&mut *tx, queue).await? {
        return Err(queue_not_found(CONFIG, queue));
    }
    if !keys.is_empty() {
        let keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
        sqlx::query_scalar!(
            r#"select count(pgq.set_queue_config($1, k, v)) as "n!"
               from unnest($2::text[], $3::text[]) as u(k, v)"#,
            queue.as_str(),
            &keys,
            &values
        )
        .fetch_one(&mut *tx)
        .await
        .op(CONFIG)?;
    }
    if config.disable_insert.is_some() || config.per_tx_limit.is_some() {
        let (set_limit, limit) = match config.per_tx_limit {
            Some(l) => (true, l),
            None => (false, None),
        };
        sqlx::query!(
            r#"update pgq.queue
               set queue_disable_insert = coalesce($2, queue_disable_insert),
                   queue_per_tx_limit = case when $3 then $4 else queue_per_tx_limit end
               where queue_name = $1"#,
            queue.as_str(),
            config.disable_insert,
            set_limit,
            limit
        )
        .execute(&mut *tx)
        .await
        .op(CONFIG)?;
    }
    tx.commit().await.op(CONFIG)?;
    Ok(())
}

/// Read a queue's stored configuration (all eight settings). Needs no pgq role.
pub async fn get_queue_config<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
) -> Result<StoredQueueConfig> {
    const OP: Op = Op::public("get_queue_config");
    let r = sqlx::query!(
        r#"select queue_ticker_max_count, queue_ticker_max_lag, queue_ticker_idle_period,
                  queue_ticker_paused, queue_rotation_period, queue_external_ticker,
                  queue_disable_insert, queue_per_tx_limit
           from pgq.queue where queue_name = $1"#,
        queue.as_str()
    )
    .fetch_optional(ex)
    .await
    .op(OP)?
    .ok_or_else(|| queue_not_found(OP, queue))?;
    Ok(StoredQueueConfig {
        ticker_max_count: r.queue_ticker_max_count,
        ticker_max_lag: interval_to_duration(&r.queue_ticker_max_lag),
        ticker_idle_period: interval_to_duration(&r.queue_ticker_idle_period),
        ticker_paused: r.queue_ticker_paused,
        rotation_period: interval_to_duration(&r.queue_rotation_period),
        external_ticker: r.queue_external_ticker,
        disable_insert: r.queue_disable_insert,
        per_tx_limit: r.queue_per_tx_limit,
    })
}

/// Pause ticking for a queue (`ticker_paused = true`). Needs `pgq_admin`.
pub async fn pause_queue(conn: &mut PgConnection, queue: &QueueName) -> Result<()> {
    let cfg = QueueConfig {
        ticker_paused: Some(true),
        ..Default::default()
    };
    set_queue_config(conn, queue, &cfg).await
}

/// Resume ticking for a queue (`ticker_paused = false`). Needs `pgq_admin`.
pub async fn resume_queue(conn: &mut PgConnection, queue: &QueueName) -> Result<()> {
    let cfg = QueueConfig {
        ticker_paused: Some(false),
        ..Default::default()
    };
    set_queue_config(conn, queue, &cfg).await
}

/// Refuse (`true`) or allow (`false`) inserts into a queue. Needs `pgq_admin`.
pub async fn set_insert_disabled(
    conn: &mut PgConnection,
    queue: &QueueName,
    disabled: bool,
) -> Result<()> {
    let cfg = QueueConfig {
        disable_insert: Some(disabled),
        ..Default::default()
    };
    set_queue_config(conn, queue, &cfg).await
}

macro_rules! queue_info_row {
    ($r:expr) => {{
        let r = $r;
        QueueInfo {
            queue_name: r.queue_name.unwrap_or_default(),
            queue_ntables: r.queue_ntables.unwrap_or_default(),
            queue_cur_table: r.queue_cur_table.unwrap_or_default(),
            queue_rotation_period: opt_interval(r.queue_rotation_period),
            queue_switch_time: r.queue_switch_time.unwrap_or_default(),
            queue_external_ticker: r.queue_external_ticker.unwrap_or_default(),
            queue_ticker_paused: r.queue_ticker_paused.unwrap_or_default(),
            queue_ticker_max_count: r.queue_ticker_max_count.unwrap_or_default(),
            queue_ticker_max_lag: opt_interval(r.queue_ticker_max_lag),
            queue_ticker_idle_period: opt_interval(r.queue_ticker_idle_period),
            ticker_lag: opt_interval(r.ticker_lag),
            ev_per_sec: r.ev_per_sec,
            ev_new: r.ev_new.unwrap_or_default(),
            last_tick_id: r.last_tick_id.map(TickId),
        }
    }};
}

/// Information about every queue (`pgq.get_queue_info()`), ordered by name. Needs no pgq role.
pub async fn get_queue_info_all<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<QueueInfo>> {
    let rows = sqlx::query!(r#"select * from pgq.get_queue_info() order by queue_name"#)
        .fetch_all(ex)
        .await
        .op(INFO)?;
    Ok(rows.into_iter().map(|r| queue_info_row!(r)).collect())
}

/// Information about one queue (`pgq.get_queue_info(queue)`). Needs no pgq role.
pub async fn get_queue_info<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<QueueInfo> {
    let r = sqlx::query!(r#"select * from pgq.get_queue_info($1)"#, queue.as_str())
        .fetch_optional(ex)
        .await
        .op(INFO)?
        .ok_or_else(|| queue_not_found(INFO, queue))?;
    Ok(queue_info_row!(r))
}

/// The name of the queue's current event table (`pgq.current_event_table`), e.g. `pgq.event_3_1`.
///
/// Needs `pgq_writer`.
pub async fn current_event_table<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<String> {
    const OP: Op = Op::writer("current_event_table");
    sqlx::query_scalar!(
        r#"select pgq.current_event_table($1) as "t!""#,
        queue.as_str()
    )
    .fetch_one(ex)
    .await
    .op(OP)
    .map_err(|e| with_queue(e, queue))
}

/// Whether the queue exists: a cheap check. Needs no pgq role.
pub async fn queue_exists<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<bool> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from pgq.queue where queue_name = $1) as "e!""#,
        queue.as_str()
    )
    .fetch_one(ex)
    .await
    .op(INFO)
}

/// [`queue_exists`], or fail with [`crate::ErrorKind::QueueNotFound`] naming the queue: for
/// callers about to rely on the queue. Needs no pgq role.
pub async fn require_queue<'e>(ex: impl PgExecutor<'e>, queue: &QueueName) -> Result<()> {
    if queue_exists(ex, queue).await? {
        Ok(())
    } else {
        Err(queue_not_found(INFO, queue))
    }
}
