//! `sluice`: run streaming, checkpointed, resumable ingestion pipelines.

#[macro_use]
mod console;

mod cli;
mod commands;
mod env;
mod error;
mod prices;
mod progress;
mod resume;
mod serve;
mod signals;
mod status;
mod store_args;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};
use crate::progress::{LogWriter, stderr_is_terminal};

/// mimalloc: the engine allocates per record; it halved the engine's time in the benchmarks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth saying.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        errln!("warning: .env could not be read: {e}");
    }
    let cli = Cli::parse();
    let color = progress::use_color(cli.color);
    progress::set_color(color);
    let quiet = matches!(&cli.command, Command::Run(run) if run.quiet);
    let logs = Logs { format: cli.log_format, color, verbose: cli.verbose, quiet };
    if let Err(message) = init_logging(logs, matches!(cli.command, Command::Run(_))) {
        errln!("error: {message}");
        return ExitCode::from(error::code::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::code::FAILED);
        }
    };
    match runtime.block_on(commands::dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// How the logs are written, from the global flags.
struct Logs {
    format: LogFormat,
    color: bool,
    /// `-v` count.
    verbose: u8,
    /// `run -q`.
    quiet: bool,
}

/// Logs go to stderr. `SLUICE_LOG` (or `RUST_LOG`) sets the filter, and a bad
/// one is refused; else `-q` shows warnings and errors, `-v` debug, `-vv`
/// trace; the default is `info`, or `warn` while a progress bar is on a terminal.
fn init_logging(logs: Logs, running: bool) -> Result<(), String> {
    let default = match (logs.quiet, logs.verbose) {
        (_, 1) => "debug",
        (_, 2..) => "trace",
        (true, _) => "warn",
        _ if running && stderr_is_terminal() => "warn",
        _ => "info",
    };
    let from_env = ["SLUICE_LOG", "RUST_LOG"].iter().find_map(|key| std::env::var(key).ok().map(|v| (*key, v)));
    let filter = match from_env {
        Some((key, value)) => EnvFilter::try_new(&value).map_err(|e| {
            format!("{key}={value} is not a log filter: {e} (e.g. {key}=info, {key}=warn, {key}=sluice_core=debug)")
        })?,
        None => EnvFilter::new(default),
    };
    // No internal error reports: they go to stderr with `eprintln!`, which panics once stderr is closed.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false)
        .log_internal_errors(false);
    let result = match logs.format {
        LogFormat::Text => builder.with_ansi(logs.color).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        errln!("warning: logging not initialised: {e}");
    }
    Ok(())
}
