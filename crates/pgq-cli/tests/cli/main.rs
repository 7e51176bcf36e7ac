//! Integration tests of the `pgq` binary against a real PostgreSQL with pgq (pgq-testkit): every
//! command, its `--json` output, and bad input.

mod conn;
mod consumer;
mod dlq;
mod escapes;
mod failover;
mod halfopen;
mod help;
mod install;
mod libpq;
mod queue;
mod roles;
mod send;
mod status;
mod status_warnings;
mod tail;
mod tick;
mod util;
