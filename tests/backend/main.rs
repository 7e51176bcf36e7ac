//! The SQL backend (`pgq_core::Backend::Sql`): this project's implementation of the pgq API for
//! databases where the pgq extension cannot be created. Its behaviour is compared with the real
//! extension's, call by call (`diff`), and it is installed and used by a database owner that is
//! not a superuser (`owner`).

mod cdc;
mod cli;
mod diff;
mod harness;
mod inserter;
mod install;
mod owner;
