//! `pgq`: the command-line tool of PgQ for Rust — install the schema, manage queues and
//! consumers, watch lag, send and tail events, tick and maintain, for people (tables) and for
//! scripts (`--json`, exit codes 0 success / 1 failure / 2 usage error / 3 `status --check`
//! found warnings).

#![forbid(unsafe_code)]

mod cli;
mod conn;
mod consumer;
mod dlq;
mod error;
mod install;
mod interrupt;
mod out;
mod queue;
mod send;
mod status;
mod tail;
mod tick;
mod watchdog;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, Shell};
use crate::conn::Target;
use crate::error::{CliError, ErrorKind};

/// What every command gets: where to connect and how to print.
pub(crate) struct Ctx {
    /// The database.
    pub(crate) target: Target,
    /// Print JSON instead of tables.
    pub(crate) json: bool,
}

impl Ctx {
    /// Connect to the database.
    pub(crate) async fn connect(&self) -> Result<pgq_core::sqlx::PgConnection, CliError> {
        self.target.connect().await
    }
}

fn completions(shell: Shell) {
    let mut cmd = Cli::command();
    let mut stdout = std::io::stdout();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "pgq", &mut stdout)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "pgq", &mut stdout)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "pgq", &mut stdout)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let target = Target::resolve(cli.db.as_deref(), cli.connect_timeout)?;
    let ctx = Ctx {
        target,
        json: cli.json,
    };
    match cli.command {
        Command::Install { check, backend } => install::run(&ctx, check, backend).await,
        Command::Queue(cmd) => queue::run(&ctx, cmd).await,
        Command::Consumer(cmd) => consumer::run(&ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(&ctx, cmd).await,
        Command::Status {
            watch,
            check,
            horizon_after,
        } => status::run(&ctx, watch, check, horizon_after).await,
        Command::Send(args) => send::run(&ctx, args).await,
        Command::Tail(args) => tail::run(&ctx, args).await,
        Command::Tick { queue } => tick::tick(&ctx, queue).await,
        Command::Maint => tick::maint(&ctx).await,
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors quote the bad argument: escape it like every other output.
        Err(e) if e.use_stderr() => {
            let _ = write!(
                std::io::stderr(),
                "{}",
                out::printable(&e.render().to_string())
            );
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == ErrorKind::Io && e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) if e.kind() == ErrorKind::Warnings => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {}", out::printable(&conn::redact(&e.to_string())));
            ExitCode::FAILURE
        }
    }
}
