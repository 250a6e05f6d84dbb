//! `sluice run`: start or resume a run and follow it to the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::{InFlight, Pipeline, RunHandle, RunInfo, RunStatus, RunSummary, Start, Store};
use tokio_util::sync::CancellationToken;

use sluice_connectors::registry::open_store;
use sluice_connectors::{PipelineFile, build_pipeline};

use crate::cli::RunArgs;
use crate::commands::output::print_json;
use crate::env::{StoreOrigin, apply_env, env_var};
use crate::error::{CliError, code};
use crate::prices::money;
use crate::progress::{Reporter, summary_line};
use crate::resume::find_resumable;
use crate::signals::Signals;
use crate::status::{CostDoc, cost_text, failure_text, failures_by_phase};
use crate::store_args::resolve;

pub async fn run(args: RunArgs) -> Result<u8, CliError> {
    if args.distributed {
        return crate::commands::worker::run_distributed(&args).await;
    }
    let resuming = args.resume || args.resume_run_id.is_some();
    // A resume by id needs no pipeline file: the run carries its settings.
    let file = if args.resume_run_id.is_some() && !args.config.exists() {
        None
    } else {
        if !args.config.exists() {
            return Err(CliError::usage(format!(
                "cannot read pipeline file {}: it does not exist; `sluice init` writes one (or give -c FILE)",
                args.config.display()
            )));
        }
        let mut file = PipelineFile::load(&args.config)?;
        apply_env(&mut file, &env_var)?;
        Some(file)
    };
    let (store_config, origin) = resolve(args.db.as_deref(), file.as_ref())?;
    let store: Arc<dyn Store> = open_store(&store_config)?;
    let from = match origin {
        StoreOrigin::Env(var) => format!(" (from ${var})"),
        StoreOrigin::Flag | StoreOrigin::File => String::new(),
    };
    let hint = Hint { config: file.is_some().then(|| args.config.clone()), db: args.db.clone(), origin };

    let (mut file, start, origin) = if resuming {
        let run = find_run_to_resume(&store, &args, file.as_ref()).await?;
        tracing::info!(run_id = run.id, status = %run.status, "resuming run with its original settings");
        (PipelineFile::from_saved(&run.config)?, Start::Resume(run.id), format!("the saved settings of run {}", run.id))
    } else {
        let file = file.ok_or_else(|| CliError::usage("a pipeline file is needed to start a run"))?;
        (file, Start::New, args.config.display().to_string())
    };
    if args.watch {
        if resuming && !file.watches() {
            // Its checkpoint is a listing position, not a watch position: resuming it as a watch would re-read all.
            return Err(CliError::usage(format!(
                "--watch: {origin} do not watch; resume without --watch, or start a new run with --watch"
            )));
        }
        let flag = if file.can_watch() { "--watch" } else { "--watch needs a files source" };
        file.enable_watch().map_err(|e| CliError::usage(format!("{flag}: {e} (in {origin})")))?;
    }
    if !resuming && (args.incremental || sluice_connectors::incremental::is_incremental(&file)) {
        plan_incremental(&mut file, &store, &origin).await?;
    }
    if args.refit_themes {
        let themes = file.phases.theme_extraction.as_mut().ok_or_else(|| {
            CliError::usage(format!("--refit-themes: {origin} have no [phases.theme_extraction] to fit"))
        })?;
        themes.refit = true;
    }
    if args.max_records.is_some() {
        file.max_records = args.max_records;
    }
    if args.no_document_events {
        file.per_document_events = Some(false);
    }
    let pipeline = build_pipeline(&file, store.clone()).map_err(|e| CliError::usage(format!("{e} (in {origin})")))?;
    let saved = serde_json::to_value(&file).map_err(|e| CliError::runtime(e.to_string()))?;
    follow(pipeline, start, &args, &format!("{}{from}", store.describe()), &Ending { hint, saved }).await
}

/// What the last lines of a run need besides its summary.
struct Ending {
    hint: Hint,
    /// The pipeline file as the run saved it (its models and `[prices]`).
    saved: serde_json::Value,
}

/// What the commands printed after a run must repeat so that following
/// them reaches the same store with the same pipeline.
struct Hint {
    /// The `-c` file, when the run read one.
    config: Option<PathBuf>,
    db: Option<String>,
    origin: StoreOrigin,
}

impl Hint {
    /// `sluice run -c FILE [--db URL]` and then `extra`, with a note when the
    /// store came from the environment (which must be set again).
    fn command(&self, extra: &str) -> String {
        let mut command = "sluice run".to_string();
        if let Some(config) = &self.config {
            command.push_str(&format!(" -c {}", quoted(&config.display().to_string())));
        }
        if let Some(db) = &self.db {
            command.push_str(&format!(" --db {}", quoted(db)));
        }
        command.push_str(extra);
        let mut line = format!("`{command}`");
        if let StoreOrigin::Env(var) = self.origin {
            line.push_str(&format!(" with the same ${var}"));
        }
        line
    }
}

/// A shell word: as is when it needs no quoting, else in single quotes.
fn quoted(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,%".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

/// Sets the span of an incremental run from the pipeline's high-water mark.
async fn plan_incremental(file: &mut PipelineFile, store: &Arc<dyn Store>, origin: &str) -> Result<(), CliError> {
    use sluice_connectors::incremental;
    let usage = |e: sluice_connectors::ConfigError| CliError::usage(format!("--incremental: {e} (in {origin})"));
    let (pipeline, source) = incremental::target(file).map_err(usage)?;
    let mark = store.high_water_mark(&pipeline, &source).await?;
    let plan = incremental::apply(file, mark.as_ref(), incremental::now()).map_err(usage)?;
    tracing::info!(after_run = plan.after_run, "{}", plan.message);
    Ok(())
}

/// Finds the run `--resume`/`--resume-run-id` means, after marking runs left
/// active by a dead process as failed (so a crashed run can be resumed).
async fn find_run_to_resume(
    store: &Arc<dyn Store>,
    args: &RunArgs,
    file: Option<&PipelineFile>,
) -> Result<RunInfo, CliError> {
    drop(store.acquire_active().await?);
    if let Some(id) = args.resume_run_id {
        let run = store
            .get_run(id)
            .await?
            .ok_or_else(|| CliError::usage(format!("run {id} not found in {}", store.describe())))?;
        // A run resumes with its own saved settings: resuming another pipeline's run by mistake would write
        // its documents where this pipeline's are expected.
        if let Some(name) = file.and_then(|f| f.name.as_deref())
            && name != run.pipeline
            && !args.force
        {
            return Err(CliError::usage(format!(
                "run {id} belongs to pipeline {:?}, not {name:?} of {}: give its own -c file, or add --force \
                 to resume it anyway (with its saved settings)",
                run.pipeline,
                args.config.display()
            )));
        }
        return Ok(run);
    }
    let name = file.and_then(|f| f.name.clone()).unwrap_or_default();
    find_resumable(store.as_ref(), |run| run.pipeline == name).await?.map_err(|_| {
        CliError::usage(format!(
            "No resumable run found for pipeline {name:?}: no stopped or failed run of it has a checkpoint; start a new run"
        ))
    })
}

async fn follow(
    pipeline: Pipeline,
    start: Start,
    args: &RunArgs,
    store: &str,
    ending: &Ending,
) -> Result<u8, CliError> {
    let mut reporter =
        Reporter::new(args.quiet, args.events_out.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
    let resumed_from = match start {
        Start::Resume(id) => pipeline.store().get_run(id).await?.and_then(|r| r.checkpoint),
        Start::New => None,
    };
    // Before the run exists, so a signal from the moment its row is written stops it gracefully.
    let signals = Signals::new();
    let mut handle: RunHandle = pipeline.start(start).await?;
    let run_id = handle.run_id;
    tracing::info!(run_id, resumed = handle.resumed, store = %pipeline.store().describe(), "run started");
    crate::progress::note_line(&match resumed_from {
        Some(cp) => format!(
            "run {run_id} resumed from {} committed records ({} batches, phase {}) in {store}",
            cp.counts.stored, cp.batches, cp.phase
        ),
        None => format!("run {run_id} (new) in {store}"),
    });
    let signals = match signals {
        Ok(signals) => Some(tokio::spawn(stop_on_signals(signals, handle.stop_token(), handle.in_flight()))),
        Err(e) => {
            tracing::warn!(error = %e, "signals not handled: a signal ends the process at once");
            None
        }
    };

    let mut write_error = None;
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = handle.next_event() => event,
            _ = ticks.tick() => {
                reporter.tick();
                continue;
            }
        };
        let Some(event) = event else { break };
        if write_error.is_none()
            && let Err(e) = reporter.on_event(&event)
        {
            // The run goes on; its data matters more than its event log.
            tracing::error!(error = %e, "events file is no longer written");
            write_error = Some(e);
        }
    }
    let summary = handle.wait().await;
    if let Some(signals) = signals {
        signals.abort();
    }
    reporter.finish().map_err(|e| CliError::runtime(e.to_string()))?;
    report(&summary, args.json, ending)?;
    let failed = !failures_by_phase(&summary.checkpoint).is_empty();
    Ok(match summary.status {
        RunStatus::Completed if failed && args.fail_on_failures => code::RECORDS_FAILED,
        RunStatus::Completed => code::OK,
        RunStatus::Stopped | RunStatus::Stopping => code::STOPPED,
        RunStatus::Failed | RunStatus::Running => code::FAILED,
    })
}

fn report(summary: &RunSummary, json: bool, ending: &Ending) -> Result<(), CliError> {
    let hint = &ending.hint;
    if json {
        print_json(summary)?;
    }
    let cp = &summary.checkpoint;
    let mut line = format!(
        "run {} {} in {:.1}s: {}",
        summary.run_id,
        summary.status,
        summary.duration_seconds,
        summary_line(&summary.counts)
    );
    let cost = CostDoc::new(cp);
    if cost.llm_calls + cost.embedding_calls > 0 {
        line.push_str(&format!("; {}", cost_text(&cost)));
        if let Some(money) = money(&ending.saved, &cp.cost).text() {
            line.push_str(&format!("; {money}"));
        }
    }
    let failures = failure_text(cp);
    if !failures.is_empty() {
        line.push_str(&format!("; {failures} (see `sluice failures {}`)", summary.run_id));
    }
    let committed = !cp.is_empty();
    let resume = hint.command(&format!(" --resume-run-id {}", summary.run_id));
    let anew = hint.command("");
    match summary.status {
        RunStatus::Failed if committed => errln!(
            "{line}\nerror: {}\nThe checkpoint is kept: fix the cause and resume with {resume}",
            summary.error.as_deref().unwrap_or("unknown"),
        ),
        RunStatus::Failed => errln!(
            "{line}\nerror: {}\nNothing was committed, so there is nothing to resume: fix the cause and start a new \
             run with {anew}",
            summary.error.as_deref().unwrap_or("unknown"),
        ),
        RunStatus::Stopped if committed => errln!("{line}\nResume with {resume}"),
        RunStatus::Stopped => errln!("{line}\nNothing was committed: start a new run with {anew}"),
        _ => errln!("{line}"),
    }
    Ok(())
}

/// First SIGINT/SIGTERM/SIGHUP: stop at the next batch boundary. A second
/// one (not the first repeated within a second): abort now, exit 130.
async fn stop_on_signals(mut signals: Signals, stop: CancellationToken, in_flight: InFlight) {
    let first = signals.next().await;
    let at = Instant::now();
    stop.cancel();
    let batches = in_flight.batches();
    crate::progress::note_stopping(batches);
    let noun = if batches == 1 { "batch" } else { "batches" };
    errln!("stopping: {batches} {noun} in flight; a second signal aborts");
    signals.next_after(first, at).await;
    errln!("aborted; the last committed checkpoint is kept");
    std::process::exit(i32::from(code::ABORTED));
}

/// The first SIGINT, SIGTERM or SIGHUP.
pub async fn wait_for_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
