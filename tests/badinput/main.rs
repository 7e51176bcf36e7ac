//! Bad input and security against real PostgreSQL: a table-driven suite of bad names,
//! payloads, durations and config files through the library, the `pgq` CLI and the
//! `pgq-ticker` config (each: a clear error, a non-zero exit for binaries, the database
//! unchanged); least privilege end to end; and no password in any log line or error. Needs the
//! `pgq` and `pgq-ticker` binaries built (`cargo build --workspace`).

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod names;
mod passwords;
mod payloads;
mod privilege;
mod ticker_config;

use std::process::Output;

use pgq_core::sqlx::PgPool;

/// Everything a bad input must leave alone: queues, consumers, subscriptions, ticks, events,
/// retry events, and the tables of schema `public`.
pub(crate) async fn snapshot(pool: &PgPool) -> String {
    pgq_core::sqlx::query_scalar(
        "select json_build_object(
            'queues', (select json_agg(q order by queue_id) from pgq.queue q),
            'consumers', (select json_agg(c order by co_id) from pgq.consumer c),
            'subscriptions', (select json_agg(s order by sub_id) from pgq.subscription s),
            'ticks', (select count(*) from pgq.tick),
            'events', (select count(*) from pgq.event_template),
            'retry', (select count(*) from pgq.retry_queue),
            'public_tables', (select json_agg(relname order by relname) from pg_class
                              where relnamespace = 'public'::regnamespace and relkind = 'r')
         )::text",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Exit code, standard output and standard error of a finished command, for messages.
pub(crate) fn describe(what: &str, o: &Output) -> String {
    format!(
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
