//! `sluice runs` and `sluice status`: read runs straight from the store.

use crate::cli::{RunsArgs, StatusArgs};
use crate::commands::output::print_json;
use crate::commands::remote;
use crate::error::{CliError, code};
use crate::progress::summary_line;
use crate::status::{RunStatusDoc, cost_text, failure_text, slot_held};
use crate::store_args::open_store_args;
use sluice_core::RunStatus;

/// How many recent runs `--pipeline` looks through.
const RUNS_SEARCHED: usize = 1000;

pub async fn list(args: RunsArgs) -> Result<u8, CliError> {
    let (docs, from) = match &args.server {
        Some(server) => (remote::history(server, args.limit).await?, server.clone()),
        None => {
            let store: std::sync::Arc<dyn sluice_core::Store> = open_store_args(&args.store)?;
            // A filter looks further back than the limit, so it still finds up to `limit` runs.
            let wanted = if args.pipeline.is_some() { RUNS_SEARCHED } else { args.limit as usize };
            let runs = store.list_runs(wanted).await?;
            let held = slot_held(store.as_ref()).await;
            (runs.iter().map(|run| RunStatusDoc::new(run).with_slot(held)).collect(), store.describe())
        }
    };
    let docs: Vec<RunStatusDoc> = docs
        .into_iter()
        .filter(|d| args.pipeline.as_ref().is_none_or(|name| &d.pipeline == name))
        .take(args.limit as usize)
        .collect();
    let from = match &args.pipeline {
        Some(name) => format!("{from} for pipeline {name:?}"),
        None => from,
    };
    if args.json {
        print_json(&docs)?;
        return Ok(code::OK);
    }
    if docs.is_empty() {
        outln!("no runs in {from}");
        return Ok(code::OK);
    }
    for line in table(&docs) {
        outln!("{line}");
    }
    Ok(code::OK)
}

/// The runs as a table whose columns are as wide as their widest cell.
fn table(docs: &[RunStatusDoc]) -> Vec<String> {
    let header = ["run", "pipeline", "status", "phase", "stored", "failed", "started"].map(String::from);
    let rows: Vec<[String; 7]> = docs
        .iter()
        .map(|d| {
            [
                d.run_id.to_string(),
                d.pipeline.clone(),
                d.status_text(),
                d.current_phase.clone(),
                d.counts.stored.to_string(),
                d.failed_by_phase.values().sum::<u64>().to_string(),
                d.started_at.clone(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Numbers right-aligned, text left-aligned; the last column unpadded.
    let numeric = [true, false, false, false, true, true, false];
    std::iter::once(header)
        .chain(rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .zip(numeric)
                .enumerate()
                .map(|(i, ((cell, width), right))| match (right, i == 6) {
                    (true, _) => format!("{cell:>width$}"),
                    (false, true) => cell.clone(),
                    (false, false) => format!("{cell:<width$}"),
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

pub async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let doc = match &args.server {
        Some(server) => remote::status(server, args.run_id).await?,
        None => {
            let store: std::sync::Arc<dyn sluice_core::Store> = open_store_args(&args.store)?;
            let run = store
                .get_run(args.run_id)
                .await?
                .ok_or_else(|| CliError::usage(format!("run {} not found in {}", args.run_id, store.describe())))?;
            RunStatusDoc::read(store.as_ref(), &run).await
        }
    };
    let distributed = match &args.server {
        None => crate::commands::worker::distributed_details(&args.store, args.run_id).await?,
        Some(_) => None,
    };
    let doc = match &distributed {
        Some((parts, workers)) => doc.with_distributed(parts, workers),
        None => doc,
    };
    let schedule = match &args.server {
        Some(server) => remote::schedule(server).await?,
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(&doc).map_err(|e| CliError::runtime(e.to_string()))?;
        if let (Some(schedule), Some(object)) = (&schedule, value.as_object_mut()) {
            object.insert("schedule".into(), schedule.clone());
        }
        print_json(&value)?;
        return Ok(code::OK);
    }
    outln!("run {} ({})", doc.run_id, doc.pipeline);
    outln!("  status:   {}", doc.status_text());
    outln!("  phase:    {}", doc.current_phase);
    outln!("  counts:   {}", summary_line(&doc.counts));
    if let Some(schedule) = &schedule {
        outln!("  schedule: {}", remote::schedule_text(schedule));
    }
    if let Some(cp) = &doc.checkpoint {
        // Later phases count apart, in the order they ran.
        let current = (cp.in_later_phase() && !cp.phase_done(&cp.phase)).then_some(&cp.phase);
        let later = cp.phases_done.iter().skip(1).chain(current);
        for phase in later {
            let counts = cp.phase_counts.get(phase).copied().unwrap_or_default();
            let state = if cp.phase_done(phase) || doc.status == RunStatus::Completed { "done" } else { "in progress" };
            outln!("    {phase} ({state}): {}", summary_line(&counts));
        }
    }
    let cost = &doc.cost;
    if cost.llm_calls + cost.embedding_calls + cost.calls_saved > 0 {
        outln!("  cost:     {} calls_saved={}", cost_text(cost), cost.calls_saved);
    }
    if let Some(money) = &doc.cost_text {
        outln!("            {money}");
    }
    if let Some(cp) = &doc.checkpoint {
        let failures = failure_text(cp);
        if !failures.is_empty() {
            outln!("  failures: {failures} (see `sluice failures {}`)", doc.run_id);
        }
    }
    outln!("  started:  {}", doc.started_at);
    outln!("  updated:  {}", doc.updated_at);
    if let Some(finished) = &doc.finished_at {
        outln!("  finished: {finished}");
    }
    if let Some(error) = &doc.error {
        outln!("  error:    {error}");
    }
    if let Some(cp) = &doc.checkpoint {
        outln!("  checkpoint: {} batches committed", cp.batches);
        for (partition, pos) in &cp.partitions {
            let state = match (&pos.cursor, pos.done) {
                (_, true) => "done".to_string(),
                (Some(cursor), false) => format!("at cursor {cursor}, {} records into its page", pos.skip),
                (None, false) => format!("on its first page, {} records in", pos.skip),
            };
            outln!("    {partition}: {state}");
        }
    } else {
        outln!("  checkpoint: none (nothing committed yet)");
    }
    if let Some((parts, workers)) = &distributed {
        crate::commands::worker::print_details(parts, workers);
    }
    Ok(code::OK)
}
