//! SQL that several statements share, written once.
//!
//! `sqlx::query!` checks a statement at compile time and so needs its text as string literals
//! (joined with `+`), never a constant. The shared pieces are therefore macros that write the
//! whole `query!` call around the statement-specific part.

/// `sqlx::query_as!(Event, …)` over a pgq function that returns a batch's events
/// (`pgq.get_batch_events`, `pgq.get_batch_cursor`): pgq's event columns, typed as [`Event`]
/// (`crate::types::Event`, which must be in scope) wants them. `$from` is the function call.
///
/// [`Event`]: crate::types::Event
macro_rules! query_batch_events {
    ($from:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Event,
            r#"select ev_id as "ev_id!", ev_time as "ev_time!", ev_txid as "ev_txid!", ev_retry,
                      ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
               from "# + $from
            $(, $arg)*
        )
    };
}
pub(crate) use query_batch_events;

/// `sqlx::$query!` (`query`, `query_scalar`, …) of a statement (string literals joined with `+`)
/// that can read `subscriptions`: every `pgq.subscription` row with its queue's and consumer's
/// columns (`queue_name`, `co_name`, ...). A statement that reads it once gets the plan of the
/// join written out. A statement with common table expressions of its own starts with
/// `, name as (...)`.
macro_rules! query_subscriptions {
    ($query:ident, $sql:literal $(+ $more:literal)* $(, $arg:expr)* $(,)?) => {
        sqlx::$query!(
            "with subscriptions as (
                 select * from pgq.subscription s
                 join pgq.queue q on q.queue_id = s.sub_queue
                 join pgq.consumer c on c.co_id = s.sub_consumer) " + $sql $(+ $more)*
            $(, $arg)*
        )
    };
}
pub(crate) use query_subscriptions;

/// `sqlx::$query!` of a statement (string literals joined with `+`) that can read `lag0_queues`: the queues with
/// `ticker_max_lag = 0` that are ticked here (neither paused nor ticked externally), which a
/// ticker fast-polls.
macro_rules! query_lag0_queues {
    ($query:ident, $sql:literal $(+ $more:literal)* $(, $arg:expr)* $(,)?) => {
        sqlx::$query!(
            "with lag0_queues as (
                 select * from pgq.queue
                  where queue_ticker_max_lag = interval '0'
                    and not queue_ticker_paused and not queue_external_ticker) " + $sql $(+ $more)*
            $(, $arg)*
        )
    };
}
pub(crate) use query_lag0_queues;

/// `sqlx::$query!` (`query_as(Type)` for `query_as!`) of a statement (string literals joined with
/// `+`) whose first parameter is an advisory-lock key (a ticker's `TICKER_LOCK_KEY`) and that can read `lock_holders`: the `pid`s
/// of the sessions holding that lock (session level) on the current database.
macro_rules! query_lock_holders {
    ($query:ident $(($ty:path))?, $sql:literal $(+ $more:literal)* $(, $arg:expr)* $(,)?) => {
        sqlx::$query!(
            $($ty,)?
            "with lock_holders as (
                 select l.pid from pg_locks l
                  where l.locktype = 'advisory' and l.granted
                    and l.database = (select oid from pg_database
                                       where datname = current_database())
                    and l.classid::int8 = ($1::int8 >> 32) & 4294967295
                    and l.objid::int8 = $1::int8 & 4294967295
                    and l.objsubid = 1) " + $sql $(+ $more)*
            $(, $arg)*
        )
    };
}
pub(crate) use query_lock_holders;
