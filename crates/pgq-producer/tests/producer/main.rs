//! Integration tests of `pgq-producer` against a real PostgreSQL with the real pgq extension
//! (a private cluster started by `pgq-testkit`, or `PGQ_TEST_DATABASE_URL`).

mod batch;
mod cdc;
mod cdc_options;
mod common;
mod copy;
mod errors;
mod roles;
mod send;
