//! `sluice run`: start or resume a run and follow it to the end.

use std::sync::Arc;

use std::time::Instant;

use sluice_core::{InFlight, Pipeline, RunHandle, RunInfo, RunStatus, RunSummary, Start, Store};
use tokio_util::sync::CancellationToken;

use sluice_connectors::{PipelineFile, build_pipeline};

use crate::cli::RunArgs;
use crate::commands::output::print_json;
use crate::env::{apply_env, env_var};
use crate::error::{CliError, code};
use crate::progress::{Reporter, summary_line};
use crate::resume::find_resumable;
use crate::signals::Signals;
use crate::store_args::open_store_for;

pub async fn run(args: RunArgs) -> Result<u8, CliError> {
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
    let store: Arc<dyn Store> = open_store_for(args.db.as_deref(), file.as_ref())?;

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
    if args.max_records.is_some() {
        file.max_records = args.max_records;
    }
    if args.no_document_events {
        file.per_document_events = Some(false);
    }
    let pipeline = build_pipeline(&file, store.clone()).map_err(|e| CliError::usage(format!("{e} (in {origin})")))?;
    follow(pipeline, start, &args).await
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
        return store.get_run(id).await?.ok_or_else(|| CliError::usage(format!("run {id} not found")));
    }
    let name = file.and_then(|f| f.name.clone()).unwrap_or_default();
    find_resumable(store.as_ref(), |run| run.pipeline == name).await?.map_err(|_| {
        CliError::usage(format!(
            "No resumable run found for pipeline {name:?}: no stopped or failed run of it has a checkpoint; start a new run"
        ))
    })
}

async fn follow(pipeline: Pipeline, start: Start, args: &RunArgs) -> Result<u8, CliError> {
    let mut reporter =
        Reporter::new(args.quiet, args.events_out.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
    let mut handle: RunHandle = pipeline.start(start).await?;
    let run_id = handle.run_id;
    tracing::info!(run_id, resumed = handle.resumed, store = %pipeline.store().describe(), "run started");
    let signals = match Signals::new() {
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
    report(&summary, args.json)?;
    Ok(match summary.status {
        RunStatus::Completed => code::OK,
        RunStatus::Stopped | RunStatus::Stopping => code::STOPPED,
        RunStatus::Failed | RunStatus::Running => code::FAILED,
    })
}

fn report(summary: &RunSummary, json: bool) -> Result<(), CliError> {
    if json {
        print_json(summary)?;
    }
    errln!(
        "run {} {} in {:.1}s: {}",
        summary.run_id,
        summary.status,
        summary.duration_seconds,
        summary_line(&summary.counts)
    );
    match summary.status {
        RunStatus::Failed => errln!(
            "error: {}\nThe checkpoint is kept: fix the cause and resume with `sluice run --resume-run-id {}`",
            summary.error.as_deref().unwrap_or("unknown"),
            summary.run_id
        ),
        RunStatus::Stopped => {
            errln!("Resume with `sluice run --resume-run-id {}` (or `sluice run --resume`)", summary.run_id)
        }
        _ => {}
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
