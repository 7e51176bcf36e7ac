//! `pgq-ticker`: the ticker and maintenance daemon for PgQ (a pgqd replacement).
//!
//! Exit status: 0 after SIGTERM/SIGINT, 1 for a bad configuration or a startup failure (nothing
//! is started), 2 for bad flags, 3 when `--exit-after-failure` fires.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use pgq_ticker::{Args, Config, Error, ErrorKind, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgq-ticker: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        print!("{}", config.summary());
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&args, &config) {
        eprintln!("pgq-ticker: {e}");
        return ExitCode::from(1);
    }
    // One thread, like pgqd's event loop: the work is waiting on sockets, and a single thread
    // avoids cross-thread wakeups (it measurably lowers CPU with hundreds of databases).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgq-ticker: could not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pgq-ticker: {e}");
            match e.kind() {
                ErrorKind::Unreachable => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}

async fn run(args: Args, config: Config) -> Result<(), Error> {
    let _pid = match &config.pidfile {
        Some(p) => Some(PidFile::create(p)?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting pgq-ticker\n{}",
        config.summary().trim_end()
    );
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let ticker = tokio::spawn(pgq_ticker::run(config, reload_rx, shutdown.clone()));
    let signals = {
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = sigterm.recv() => { tracing::info!("got SIGTERM, shutting down"); break; }
                    _ = sigint.recv() => { tracing::info!("got SIGINT, shutting down"); break; }
                    _ = sighup.recv() => {
                        tracing::info!("got SIGHUP, re-reading configuration");
                        match Config::from_args(&args) {
                            Ok(c) => { let _ = reload_tx.send(c).await; }
                            Err(e) => tracing::error!("configuration not reloaded, keeping the current one: {e}"),
                        }
                    }
                }
            }
            shutdown.cancel();
        }
    };
    let signals = tokio::spawn(signals);
    let result = match ticker.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("ticker task failed: {e}");
            Ok(())
        }
    };
    signals.abort();
    result
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        what: format!("could not install the {what}"),
        source,
    }
}

fn init_logging(args: &Args, config: &Config) -> Result<(), Error> {
    let default = if args.quiet {
        "warn"
    } else {
        match args.verbose {
            0 => "info",
            1 => "debug,sqlx=info",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let writer = match &config.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::Io {
                    what: format!("could not open log file {}", path.display()),
                    source,
                })?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = config.logfile.is_none() && colour_on(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().with_writer(writer).init(),
        LogFormat::Text => builder.with_ansi(ansi).with_writer(writer).init(),
    }
    Ok(())
}

/// Whether to colour the log: only on a terminal, and never with `NO_COLOR` set (to anything
/// but the empty string; <https://no-color.org>).
fn colour_on(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The pid file, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> Result<PidFile, Error> {
        if let Ok(old) = std::fs::read_to_string(path)
            && let Ok(pid) = old.trim().parse::<u32>()
            && pid != std::process::id()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            return Err(Error::AlreadyRunning {
                pidfile: path.display().to_string(),
                pid,
            });
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| Error::Io {
            what: format!("could not write pid file {}", path.display()),
            source,
        })?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
