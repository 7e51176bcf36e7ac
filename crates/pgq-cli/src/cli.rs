//! The command line: every command, argument and `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pgq_core::{ConsumerName, QueueName};

/// Parse a queue name (clap reports a bad one as a usage error).
fn queue_name(s: &str) -> Result<QueueName, String> {
    QueueName::new(s).map_err(|e| e.to_string())
}

/// Parse a consumer name.
fn consumer_name(s: &str) -> Result<ConsumerName, String> {
    ConsumerName::new(s).map_err(|e| e.to_string())
}

/// Parse a duration (`500ms`, `3s`, `2h`, `1h 30m`, or seconds): [`pgq_core::duration`].
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    pgq_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// Parse a duration for a queue setting: at most [`pgq_core::QueueConfig::MAX_DURATION`].
pub(crate) fn config_duration(s: &str) -> Result<Duration, String> {
    pgq_core::parse_setting_duration(s)
}

/// Parse a positive duration for a queue setting.
fn positive_config_duration(s: &str) -> Result<Duration, String> {
    let d = config_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// Parse a positive humantime duration.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

const ROOT_HELP: &str = "\
Connection: --db URL or 'key=value ...' string, else DATABASE_URL, else the libpq variables
(PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSERVICE, ...), ~/.pgpass and
~/.pg_service.conf, as psql reads them. Several hosts: host=a,b target_session_attrs=read-write.
TLS follows sslmode. Passwords are never printed. Durations: 500ms, 2s, 1m, or seconds.

Exit codes: 0 success, 1 failure, 2 usage error, 3 `pgq status --check` found warnings.

Examples:
  pgq install
  pgq queue create orders --ticker-max-lag 500ms
  pgq consumer register orders billing
  pgq send orders --type order.created --data '{\"id\":1}'
  pgq tick orders
  pgq tail orders billing --max-events 10
  pgq status --json";

/// `pgq`: operate PgQ event queues in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "pgq", version, about, after_help = ROOT_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// Where to connect: a URL (postgres://user@host:port/db?sslmode=require) or libpq
    /// key=value pairs ("host=db1,db2 dbname=app target_session_attrs=read-write"); default
    /// DATABASE_URL, then the libpq PG* variables.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) db: Option<String>,

    /// Give up connecting after this long (default: PGCONNECT_TIMEOUT seconds, else 10s).
    #[arg(long, global = true, value_name = "DURATION", value_parser = positive_duration)]
    pub(crate) connect_timeout: Option<Duration>,

    /// Print machine-readable JSON (stable snake_case fields) instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Install or upgrade the schema (pgq, as the extension or our SQL backend, and this
    /// project's migrations).
    #[command(after_help = "\
Installing is idempotent. pgq comes as the C extension when this role may CREATE EXTENSION (a
superuser) and the server has the package; otherwise as this project's SQL backend, which a
database owner can install (managed PostgreSQL). The output says which and why; `--backend`
forces one. A database on one backend is never switched to the other.
`--check` changes nothing: it reports the backend, the versions and whether a ticker is alive, and
exits 1 when pgq or this project's schema is missing or older than this build.

Examples:
  pgq install
  pgq install --backend sql
  pgq install --check
  pgq install --check --json")]
    Install {
        /// Only report versions and ticker liveness; change nothing.
        #[arg(long)]
        check: bool,
        /// The pgq backend to install: `extension` (the C extension) or `sql` (this project's
        /// SQL implementation); default: the extension when it can be created, else `sql`.
        #[arg(long, value_name = "extension|sql", value_parser = parse_backend)]
        backend: Option<pgq_core::Backend>,
    },
    /// Create, drop, list, inspect and configure queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Register, unregister and list consumers.
    #[command(subcommand)]
    Consumer(ConsumerCmd),
    /// List, show, replay and purge dead letters (events consumers gave up on).
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// All queues and consumers with lags, pending events, and warnings to act on.
    #[command(after_help = "\
Warnings: no ticker running, queues without ticks, paused queues, consumers holding back table
rotation, dead letters from the last 24 hours (`pgq dlq list`), and a schema older than this
build.

Examples:
  pgq status
  pgq status --watch
  pgq status --watch 10s
  pgq status --json
  pgq status --check || alert   # exit status 3 when there are warnings")]
    Status {
        /// Refresh every INTERVAL (default 2s) until interrupted; with --json, one document per line.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
              value_parser = positive_duration)]
        watch: Option<Duration>,
        /// Exit with status 3 when there are warnings (for monitoring scripts).
        #[arg(long, conflicts_with = "watch")]
        check: bool,
        /// Warn when a session or prepared transaction has held the xmin horizon longer than
        /// this (consumers slow down while it is held).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
        horizon_after: Duration,
    },
    /// Send events to a queue: one from the arguments, or many from JSON lines.
    #[command(after_help = "\
--file reads one JSON object per line: {\"type\": \"...\", \"data\": ..., \"extra1\": \"...\"} with
extra1..extra4 optional; a `data` that is not a string is stored as its JSON text. Blank lines are
skipped. A line may be at most 64 MiB; the file must be UTF-8 without a byte order mark. All
events go in one transaction: a malformed or overlong line aborts the send, reports the line
number, and nothing is sent. Uses COPY when the role has pgq_admin, else set-based inserts
(pgq_writer is enough). The output of `pgq tail --json` can be sent again.

Examples:
  pgq send orders --type order.created --data '{\"id\":1}'
  pgq send orders --type order.created --data '{\"id\":1}' --extra1 shop-7
  pgq send orders --file events.jsonl
  some-producer | pgq send orders --file -")]
    Send(SendArgs),
    /// Print events as a consumer consumes them.
    #[command(after_help = "\
Each event is one line (one JSON object with --json). A batch is finished only after all of its
events were printed. --max-events stops after N events; if that is in the middle of a batch, the
batch is left unfinished, so its events are delivered again (none are lost), and a message on
standard error gives the batch id and how many of its events were not printed. A rerun starts
that batch again from its first event; to move on, rerun with --finish-batch (prints to the end
of the batch, then finishes it, so the output may exceed N) or with a larger --max-events.
Without --follow, tail stops when there is no further batch. The consumer must be registered
(`pgq consumer register QUEUE CONSUMER`), and batches need ticks (pgq-ticker, pgqd, or `pgq tick`).

Examples:
  pgq tail orders billing
  pgq tail orders billing --follow
  pgq tail orders billing --max-events 100 --json
  pgq tail orders billing --max-events 100 --finish-batch
  pgq tail orders workers --subconsumer w1 --follow")]
    Tail(TailArgs),
    /// Run one ticker round; with QUEUE, tick that queue now.
    #[command(after_help = "\
Without QUEUE, ticks every queue whose thresholds say so (what a ticker does each round). With
QUEUE, ticks it now whatever its thresholds (fails if it is paused or externally ticked).
Needs pgq_admin.

Examples:
  pgq tick
  pgq tick orders")]
    Tick {
        /// The queue to tick now.
        #[arg(value_parser = queue_name)]
        queue: Option<QueueName>,
    },
    /// Run one maintenance round: table rotation, retry mover, vacuum.
    #[command(after_help = "\
Runs every operation pgq.maint_operations() asks for (each call in its own transaction, repeated
while it reports work) and moves due events from the retry queue back into their queues.
Needs pgq_admin.

Examples:
  pgq maint
  pgq maint --json")]
    Maint,
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  pgq completions bash > /etc/bash_completion.d/pgq
  pgq completions zsh > \"${fpath[1]}/_pgq\"
  pgq completions fish > ~/.config/fish/completions/pgq.fish")]
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `pgq queue ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCmd {
    /// Create a queue, optionally with ticker settings (all applied in one transaction).
    #[command(after_help = "\
Needs pgq_admin. Durations: 500ms, 3s, 5min, 2h (at most 100 years).

Examples:
  pgq queue create orders
  pgq queue create orders --ticker-max-count 1000 --ticker-max-lag 500ms --rotation-period 1h
  pgq queue create orders --consumer billing --consumer audit
  pgq queue create orders --if-not-exists")]
    Create {
        /// Queue name (1 to 63 bytes).
        #[arg(value_parser = queue_name)]
        name: QueueName,
        /// Tick after this many events (default 500).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        ticker_max_count: Option<i32>,
        /// Tick at least this often while events arrive (default 3s).
        #[arg(long, value_name = "DURATION", value_parser = config_duration)]
        ticker_max_lag: Option<Duration>,
        /// Tick at least this often when idle (default 1min).
        #[arg(long, value_name = "DURATION", value_parser = config_duration)]
        ticker_idle_period: Option<Duration>,
        /// Rotate the event tables this often (default 2h).
        #[arg(long, value_name = "DURATION", value_parser = positive_config_duration)]
        rotation_period: Option<Duration>,
        /// Register this consumer in the same transaction (repeatable), so it receives every
        /// event produced from now on, even before it first runs.
        #[arg(long = "consumer", value_name = "NAME", value_parser = consumer_name)]
        consumers: Vec<ConsumerName>,
        /// Succeed when the queue exists already: its settings are left unchanged; consumers
        /// given with --consumer that are not registered yet are registered.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Drop a queue and its events.
    #[command(after_help = "\
A queue that still has consumers is refused unless --force, which unregisters them (their unread
events are lost). Needs pgq_admin.

Examples:
  pgq queue drop orders
  pgq queue drop orders --force")]
    Drop {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        name: QueueName,
        /// Drop even if consumers are registered (they are unregistered).
        #[arg(long)]
        force: bool,
    },
    /// List queues with ticker lag, event rate and consumer count.
    #[command(after_help = "\
Examples:
  pgq queue list
  pgq queue list --json")]
    List,
    /// Show one queue: state, configuration and consumers.
    #[command(after_help = "\
Examples:
  pgq queue info orders
  pgq queue info orders --json")]
    Info {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        name: QueueName,
    },
    /// Show a queue's configuration, or change it with KEY=VALUE pairs.
    #[command(after_help = "\
Keys: ticker_max_count (N), ticker_max_lag, ticker_idle_period, rotation_period (durations),
ticker_paused, external_ticker, disable_insert (true/false), per_tx_limit (N, or none).
Durations are at most 100 years. All pairs are checked first and applied in one transaction.
Showing needs no pgq role; changing needs pgq_admin.

Examples:
  pgq queue config orders
  pgq queue config orders ticker_max_lag=500ms ticker_max_count=1000
  pgq queue config orders per_tx_limit=none --json")]
    Config {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        name: QueueName,
        /// Settings to change.
        #[arg(value_name = "KEY=VALUE", value_parser = crate::queue::parse_setting)]
        settings: Vec<pgq_core::QueueSetting>,
    },
    /// Pause ticking of a queue (consumers get no new batches).
    #[command(after_help = "\
Needs pgq_admin.

Examples:
  pgq queue pause orders")]
    Pause {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        name: QueueName,
    },
    /// Resume ticking of a paused queue.
    #[command(after_help = "\
Needs pgq_admin.

Examples:
  pgq queue resume orders")]
    Resume {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        name: QueueName,
    },
}

/// `pgq consumer ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConsumerCmd {
    /// Register a consumer on a queue (at the newest tick unless told otherwise).
    #[command(after_help = "\
--at-tick registers at a given tick, or moves an existing consumer there (rewind or skip ahead);
--copy-from starts at another consumer's position. Needs pgq_reader.

Examples:
  pgq consumer register orders billing
  pgq consumer register orders billing --at-tick 42
  pgq consumer register orders audit --copy-from billing")]
    Register {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        queue: QueueName,
        /// Consumer name (1 to 127 bytes).
        #[arg(value_parser = consumer_name)]
        name: ConsumerName,
        /// Start at this tick id.
        #[arg(long, value_name = "TICK_ID", conflicts_with = "copy_from",
              value_parser = clap::value_parser!(i64).range(1..))]
        at_tick: Option<i64>,
        /// Start at the position of this registered consumer.
        #[arg(long, value_name = "CONSUMER", value_parser = consumer_name)]
        copy_from: Option<ConsumerName>,
    },
    /// Unregister a consumer (its unread events and retry events are dropped for it).
    #[command(after_help = "\
A cooperative member (GROUP.MEMBER) leaves its group: a batch it holds goes back to the group
(its events come again, through the retry queue), and the group keeps its position.
Needs pgq_reader.

Examples:
  pgq consumer unregister orders billing")]
    Unregister {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        queue: QueueName,
        /// Consumer name.
        #[arg(value_parser = consumer_name)]
        name: ConsumerName,
    },
    /// List consumers with lag, last seen, pending events and current batch.
    #[command(after_help = "\
Cooperative members (group.member) are shown under their group. Pending events are pgq's
estimate from event sequences.

Examples:
  pgq consumer list
  pgq consumer list orders
  pgq consumer list orders --json")]
    List {
        /// Only this queue.
        #[arg(value_parser = queue_name)]
        queue: Option<QueueName>,
    },
}

/// `pgq dlq ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCmd {
    /// List dead letters, newest first.
    #[command(after_help = "\
Dead letters are the events a consumer gave up on (after its last retry, or when its handler
asked for it), kept in the table pgq_rs.dead_letter until they are replayed or purged; table
rotation never touches them. Needs pgq_reader. With --json, each object has id, queue, consumer,
ev_id, ev_time, txid, type, data, extra1..extra4, retry, reason and failed_at (NULL stays null).

Examples:
  pgq dlq list
  pgq dlq list orders --consumer billing --limit 20
  pgq dlq list orders --json")]
    List {
        /// Only this queue's.
        #[arg(value_parser = queue_name)]
        queue: Option<QueueName>,
        /// Only this consumer's.
        #[arg(long, value_name = "CONSUMER", value_parser = consumer_name)]
        consumer: Option<ConsumerName>,
        /// At most this many.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show one dead letter in full.
    #[command(after_help = "\
Needs pgq_reader.

Examples:
  pgq dlq show 42
  pgq dlq show 42 --json")]
    Show {
        /// Dead letter id (from `pgq dlq list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Put dead letters back into their queue (or another) and remove them, in one transaction.
    #[command(after_help = "\
Each event is inserted again with its type, data and extra1..extra4 (as a new event: every
consumer of that queue receives it), and its dead letter is removed in the same transaction:
nothing is duplicated, nothing lost. An id that does not exist, a queue that does not exist or
refuses inserts fails the whole replay and changes nothing. Needs pgq_writer.

Examples:
  pgq dlq replay 42 43
  pgq dlq replay --all --queue orders --consumer billing
  pgq dlq replay 42 --to orders_retry")]
    Replay {
        /// Dead letter ids.
        #[arg(value_name = "ID", required_unless_present = "all", conflicts_with = "all",
              value_parser = clap::value_parser!(i64).range(1..))]
        ids: Vec<i64>,
        /// Every dead letter (narrowed by --queue and --consumer).
        #[arg(long)]
        all: bool,
        /// Only dead letters from this queue.
        #[arg(long, value_name = "QUEUE", value_parser = queue_name)]
        queue: Option<QueueName>,
        /// Only dead letters of this consumer.
        #[arg(long, value_name = "CONSUMER", value_parser = consumer_name)]
        consumer: Option<ConsumerName>,
        /// Put them into this queue instead of the one they came from.
        #[arg(long, value_name = "QUEUE", value_parser = queue_name)]
        to: Option<QueueName>,
    },
    /// Delete dead letters for good.
    #[command(after_help = "\
Select by id, by age (--older-than), or --all; --queue narrows the selection. On a terminal
pgq asks before deleting unless --yes is given. An id that does not exist fails the purge and
deletes nothing. Needs pgq_admin. Durations: 30min, 12h, 7days.

Examples:
  pgq dlq purge 42 43
  pgq dlq purge --older-than 7days --yes
  pgq dlq purge --all --queue orders --yes")]
    Purge {
        /// Dead letter ids.
        #[arg(value_name = "ID", required_unless_present_any = ["all", "older_than"],
              conflicts_with_all = ["all", "older_than"],
              value_parser = clap::value_parser!(i64).range(1..))]
        ids: Vec<i64>,
        /// Those that failed longer ago than this.
        #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "all")]
        older_than: Option<Duration>,
        /// Every dead letter (narrowed by --queue).
        #[arg(long)]
        all: bool,
        /// Only dead letters from this queue.
        #[arg(long, value_name = "QUEUE", value_parser = queue_name)]
        queue: Option<QueueName>,
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `pgq send` arguments.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub(crate) queue: QueueName,
    /// Event type.
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub(crate) ev_type: Option<String>,
    /// Event payload.
    #[arg(
        long,
        value_name = "DATA",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub(crate) data: Option<String>,
    /// Extra field 1.
    #[arg(long, conflicts_with = "file")]
    pub(crate) extra1: Option<String>,
    /// Extra field 2.
    #[arg(long, conflicts_with = "file")]
    pub(crate) extra2: Option<String>,
    /// Extra field 3.
    #[arg(long, conflicts_with = "file")]
    pub(crate) extra3: Option<String>,
    /// Extra field 4.
    #[arg(long, conflicts_with = "file")]
    pub(crate) extra4: Option<String>,
    /// Read JSON lines from PATH (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<PathBuf>,
}

/// `pgq tail` arguments.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub(crate) queue: QueueName,
    /// Consumer name (the group, with --subconsumer).
    #[arg(value_parser = consumer_name)]
    pub(crate) consumer: ConsumerName,
    /// Keep waiting for new batches until interrupted.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Stop after this many events (see --finish-batch when that is inside a batch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_events: Option<u64>,
    /// With --max-events: when the limit is reached inside a batch, print the rest of that batch
    /// and finish it, instead of leaving it unfinished.
    #[arg(long, requires = "max_events")]
    pub(crate) finish_batch: bool,
    /// Consume as this member of the cooperative group CONSUMER.
    #[arg(long, value_name = "NAME", value_parser = consumer_name)]
    pub(crate) subconsumer: Option<ConsumerName>,
    /// With --follow: look for a new batch at least this often. New ticks wake tail at once
    /// through the tick notification (installed by `pgq install`); polling is the fallback.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    pub(crate) poll_interval: Duration,
    /// Give up (exit 1) when the database keeps tail waiting this long: a half-open connection
    /// (the network dropped without a FIN) would otherwise leave it waiting forever. Waiting for
    /// new ticks with --follow does not count.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub(crate) db_timeout: Duration,
}

/// `--backend`: `extension` or `sql`.
fn parse_backend(s: &str) -> Result<pgq_core::Backend, String> {
    s.parse()
}
