//! Integration tests of `pgq-core` against a real PostgreSQL with the real pgq extension
//! (a private cluster started by `pgq-testkit`, or `PGQ_TEST_DATABASE_URL`).

mod common;
mod coop;
mod copy;
mod errors;
mod flow;
mod horizon;
mod install;
mod maint;
mod promises;
mod reach;
mod roles;
mod stream;
