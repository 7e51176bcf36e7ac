//! Integration tests of the `pgq` binary against a real PostgreSQL with pgq (pgq-testkit): every
//! command, its `--json` output, and bad input.

mod conn;
mod consumer;
mod help;
mod install;
mod queue;
mod send;
mod status;
mod tail;
mod tick;
mod util;
