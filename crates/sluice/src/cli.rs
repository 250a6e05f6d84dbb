//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The exit codes, as `--help` shows them (the numbers are `error::code`'s).
pub const EXIT_CODES: &str = "\
Exit codes:
  0    completed
  1    the run failed, or an error at run time (a service or store that fails)
  2    bad input: arguments, configuration, environment, files
  3    the run stopped before the end (Ctrl-C, SIGTERM, a stopped watch): resumable
  4    another run is active on the store
  5    completed with failed records, under --fail-on-failures
  101  an internal error (a bug: please report it)
  130  aborted by a second signal: resumable from the last committed checkpoint";

const ROOT_HELP: &str = "\
Examples:
  sluice init jsonl                      # a commented pipeline.toml and sample data
  sluice check                           # validate it, its store and services; changes nothing
  sluice run                             # Ctrl-C stops at the next batch
  sluice run --resume                    # continue the stopped run
  sluice status 1 -c pipeline.toml       # where run 1 stands
  sluice completions bash > ~/.local/share/bash-completion/completions/sluice

Environment: SLUICE_LOG (log filter, e.g. info or sluice_core=debug), DATABASE_URL (the store),
PIPELINE_MODE, PIPELINE_STREAMING_BATCH(_SIZE), EMBEDDING_BATCH_SIZE, NO_COLOR; secrets such as
INTERCOM_ACCESS_TOKEN and OPENAI_API_KEY are read from the environment or ./.env.
";

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Streaming, checkpointed, resumable ingestion pipelines",
    after_help = format!("{ROOT_HELP}\n{EXIT_CODES}")
)]
pub struct Cli {
    /// Log format on stderr (the filter: [env: SLUICE_LOG]).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Colour in logs and the progress bar: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// More logs: -v debug, -vv trace (SLUICE_LOG, when set, decides instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline (or resume a stopped/failed run of it).
    #[command(after_help = format!("{RUN_HELP}\n{EXIT_CODES}"))]
    Run(RunArgs),
    /// List the latest runs, newest first.
    #[command(after_help = "Examples:\n  sluice runs -c pipeline.toml\n  sluice runs --db sqlite:crawl.db --json")]
    Runs(RunsArgs),
    /// Show a run: status, phase, counts, checkpoint.
    #[command(
        after_help = "Examples:\n  sluice status 1 -c pipeline.toml\n  sluice status 3 --server http://127.0.0.1:8000 --json"
    )]
    Status(StatusArgs),
    /// Summarize an events file written with `run --events-out`.
    #[command(after_help = "Example:\n  sluice run --events-out events.jsonl && sluice events events.jsonl")]
    Events(EventsArgs),
    /// List the failed records of a run, or retry them.
    #[command(
        after_help = "Examples:\n  sluice failures -c pipeline.toml          # the latest run's\n  sluice failures retry 1 -c pipeline.toml  # fetch and process them again"
    )]
    Failures(FailuresArgs),
    /// Serve the HTTP control API (start, stop, resume and watch runs).
    #[command(
        after_help = "Examples:\n  sluice serve -c pipeline.toml\n  SLUICE_API_TOKEN=secret sluice serve --bind 0.0.0.0:8000 --protect-reads"
    )]
    Serve(ServeArgs),
    /// Ask the active run of a server to stop at the next batch boundary.
    #[command(after_help = "Example:\n  sluice stop --server http://127.0.0.1:8000")]
    Stop(StopArgs),
    /// Write a commented pipeline.toml to start from (and .env.example where secrets are needed).
    #[command(
        after_help = "Examples:\n  sluice init                  # jsonl, with sample data\n  sluice init intercom         # and .env.example\n  sluice init crawl -o site.toml"
    )]
    Init(InitArgs),
    /// Validate a pipeline file, its environment, store and remote services, changing nothing.
    #[command(after_help = format!("Examples:\n  sluice check\n  sluice check -c examples/intercom.toml\n\nExit codes: 0 all ok, 1 a service or the store fails, 2 a bad configuration or environment."))]
    Check(CheckArgs),
    /// Work on distributed runs of a PostgreSQL store (see `run --distributed`).
    Worker(WorkerArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(
        after_help = "Examples:\n  sluice completions bash > ~/.local/share/bash-completion/completions/sluice\n  sluice completions zsh > ~/.zfunc/_sluice"
    )]
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout.
    #[command(after_help = "Example:\n  sluice man > ~/.local/share/man/man1/sluice.1 && man sluice")]
    Man,
}

const RUN_HELP: &str = "\
Examples:
  sluice run                              # ./pipeline.toml
  sluice run -c examples/sample.toml --db sqlite:/tmp/s.db
  sluice run -c examples/intercom.toml --resume
  sluice run --resume-run-id 4            # its saved settings; -c/--db name its store
  PIPELINE_MODE=batch sluice run --json > summary.json
";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// What the pipeline reads.
    #[arg(value_enum, default_value_t = Template::Jsonl)]
    pub template: Template,
    /// The pipeline file to write, relative to --dir.
    #[arg(short, long, default_value = "pipeline.toml")]
    pub output: PathBuf,
    /// The directory to write into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite the pipeline file (and .env.example) if they exist.
    #[arg(long)]
    pub force: bool,
}

/// The starting points of `sluice init`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// JSON lines from a local file, embedded offline (writes a sample data/records.jsonl).
    Jsonl,
    /// The text, Markdown and HTML files of a directory (writes a sample docs-in/).
    Files,
    /// A web site, crawled politely.
    Crawl,
    /// Intercom conversations classified by an LLM (writes .env.example).
    Intercom,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Pipeline file.
    #[arg(short, long, default_value = "pipeline.toml")]
    pub config: PathBuf,
    /// Store URL or path, overriding the file and DATABASE_URL [env: DATABASE_URL].
    #[arg(long)]
    pub db: Option<String>,
}

/// `sluice worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The PostgreSQL store the runs are in (postgres://USER@HOST:PORT/DATABASE); else DATABASE_URL.
    #[arg(long)]
    pub store: Option<String>,
    /// Partitions worked on at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,
    /// Seconds a lease lasts without a heartbeat (heartbeats come every third of it): how long
    /// the partitions of a killed or cut-off worker wait before another worker takes them over.
    #[arg(long, default_value_t = 30.0, value_parser = parse_lease)]
    pub lease_secs: f64,
    /// Exit once no distributed run is open (instead of waiting for new runs).
    #[arg(long)]
    pub exit_when_idle: bool,
}

fn parse_lease(text: &str) -> Result<f64, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(1.0..=3600.0).contains(&secs) {
        return Err(format!("{secs} s is out of range (allowed: 1 to 3600)"));
    }
    Ok(secs)
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// The server, e.g. http://127.0.0.1:8000 (its token: SLUICE_API_TOKEN).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Stop distributed run --run-id of this PostgreSQL store instead (all its workers).
    #[arg(long, requires = "run_id")]
    pub db: Option<String>,
    /// The distributed run to stop (with --db).
    #[arg(long, requires = "db")]
    pub run_id: Option<i64>,
    /// Print the server's answer as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where to find the store: `--db`, else `DATABASE_URL`, else the pipeline file's `[store]`, else `sluice.db`.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Pipeline file (its `[store]` is used when neither --db nor DATABASE_URL is given).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Store URL or path, e.g. `sqlite:sluice.db` or `postgres://user@host/db` [env: DATABASE_URL].
    #[arg(long)]
    pub db: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Pipeline file.
    #[arg(short, long, default_value = "pipeline.toml")]
    pub config: PathBuf,
    /// Resume the latest stopped or failed run of this pipeline.
    #[arg(long, conflicts_with = "resume_run_id")]
    pub resume: bool,
    /// Resume this run, with its original settings.
    #[arg(long)]
    pub resume_run_id: Option<i64>,
    /// Write every event as a JSON line to this file.
    #[arg(long)]
    pub events_out: Option<PathBuf>,
    /// Do not emit per-document events (faster; counts and batches still reported).
    #[arg(long)]
    pub no_document_events: bool,
    /// Stop after this many records in total (counted across resumes).
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Store URL or path, overriding the file and DATABASE_URL [env: DATABASE_URL].
    #[arg(long)]
    pub db: Option<String>,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar or progress lines, and only warnings and errors in the logs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep running after the first pass and pick up new and changed files
    /// (files source) until Ctrl-C/SIGTERM; same as `watch = true` in `[source]`.
    #[arg(long)]
    pub watch: bool,
    /// Exit 5 when the run ended with failed records in any phase.
    #[arg(long)]
    pub fail_on_failures: bool,
    /// Resume a run of another pipeline than the one of -c.
    #[arg(long)]
    pub force: bool,
    /// Read only what changed since the pipeline's last completed run (from
    /// its high-water mark, minus the overlap, up to now); same as
    /// `incremental = true` in `[source]`. See docs/incremental.md.
    #[arg(long, conflicts_with_all = ["resume", "resume_run_id", "watch"])]
    pub incremental: bool,
    /// Fit the themes again on this run, even an incremental one (which otherwise assigns new
    /// documents to the themes it has until they drift); see docs/incremental.md.
    #[arg(long, conflicts_with_all = ["resume", "resume_run_id"])]
    pub refit_themes: bool,
    /// Create a distributed run (PostgreSQL store) for `sluice worker`s and exit; see docs/distributed.md.
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: also work on the run in this process until it ends.
    #[arg(long, requires = "distributed")]
    pub work: bool,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Ask a running `sluice serve` instead of reading the store.
    #[arg(long, conflicts_with_all = ["config", "db"])]
    pub server: Option<String>,
    /// How many runs to list (1-1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only the runs of this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Print the runs as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The run to show (`sluice runs` lists them).
    pub run_id: i64,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Ask a running `sluice serve` instead of reading the store.
    #[arg(long, conflicts_with_all = ["config", "db"])]
    pub server: Option<String>,
    /// Print the run as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// The JSON-lines file `sluice run --events-out FILE` wrote.
    pub file: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FailuresArgs {
    #[command(subcommand)]
    pub action: Option<FailuresAction>,
    /// The run whose failures to list (default: the latest run).
    pub run_id: Option<i64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the failures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum FailuresAction {
    /// Re-run a run's failed records through its pipeline (a crawl's failed pages are fetched again).
    Retry {
        /// The run whose failures to retry.
        run_id: i64,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the retry's summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Pipeline file new runs start from.
    #[arg(short, long, default_value = "pipeline.toml")]
    pub config: PathBuf,
    /// Address to listen on. A non-loopback address needs SLUICE_API_TOKEN [env: SLUICE_API_TOKEN], and its reads need the token too.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// Store URL or path, overriding the file and DATABASE_URL [env: DATABASE_URL].
    #[arg(long)]
    pub db: Option<String>,
    /// Every endpoint but /healthz needs the token (GETs too); needs SLUICE_API_TOKEN.
    #[arg(long, env = "SLUICE_PROTECT_READS")]
    pub protect_reads: bool,
    /// Seconds a client has to send a request's headers (from connecting, or from its first byte on a kept-alive connection).
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT_SECS", default_value = "10", value_parser = parse_secs)]
    pub header_timeout_secs: std::time::Duration,
    /// Seconds a client has to send a request's body, after its headers.
    #[arg(long, env = "SLUICE_BODY_TIMEOUT_SECS", default_value = "30", value_parser = parse_secs)]
    pub body_timeout_secs: std::time::Duration,
    /// Seconds a kept-alive connection may stay idle between requests.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_SECS", default_value = "60", value_parser = parse_secs)]
    pub idle_timeout_secs: std::time::Duration,
    /// Connections served at once; more wait until one closes.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Start an incremental run of the pipeline at this interval (`15m`, `1h`,
    /// `30s`); a tick while a run is active is skipped. See docs/incremental.md.
    #[arg(long)]
    pub every: Option<String>,
    /// Start an incremental run at the times a cron expression names, in UTC
    /// (`"*/15 * * * *"`, or six fields with seconds first: `"0 */15 * * * *"`).
    #[arg(long, conflicts_with = "every")]
    pub cron: Option<String>,
}

/// Seconds, possibly fractional, from 0.1 to a day.
fn parse_secs(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("{secs} s is out of range (allowed: 0.1 to 86400)"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
