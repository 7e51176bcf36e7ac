//! Integration tests of `pgq-consumer` against a real PostgreSQL with the real pgq extension
//! (a private cluster started by `pgq-testkit`, or `PGQ_TEST_DATABASE_URL`).

mod ahead;
mod batch;
mod common;
mod coop;
mod crash;
mod dead_letters;
mod halfopen;
mod panics;
mod promises;
mod registration;
mod run;
mod typed;
