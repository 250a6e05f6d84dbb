//! `sluice runs` and `sluice status`: read runs straight from the store.

use crate::cli::{RunsArgs, StatusArgs};
use crate::commands::output::print_json;
use crate::commands::remote;
use crate::error::{CliError, code};
use crate::progress::summary_line;
use crate::status::RunStatusDoc;
use crate::store_args::open_store_args;
use sluice_core::RunStatus;

pub async fn list(args: RunsArgs) -> Result<u8, CliError> {
    let (docs, from) = match &args.server {
        Some(server) => (remote::history(server, args.limit).await?, server.clone()),
        None => {
            let store: std::sync::Arc<dyn sluice_core::Store> = open_store_args(&args.store)?;
            let runs = store.list_runs(args.limit as usize).await?;
            (runs.iter().map(RunStatusDoc::new).collect(), store.describe())
        }
    };
    if args.json {
        print_json(&docs)?;
        return Ok(code::OK);
    }
    if docs.is_empty() {
        outln!("no runs in {from}");
        return Ok(code::OK);
    }
    outln!(
        "{:>6}  {:<20} {:<10} {:<22} {:>10} {:>8}  started",
        "run",
        "pipeline",
        "status",
        "phase",
        "stored",
        "failed"
    );
    for d in &docs {
        outln!(
            "{:>6}  {:<20} {:<10} {:<22} {:>10} {:>8}  {}",
            d.run_id,
            d.pipeline,
            d.status,
            d.current_phase,
            d.counts.stored,
            d.counts.failed,
            d.started_at
        );
    }
    Ok(code::OK)
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
            RunStatusDoc::new(&run)
        }
    };
    let distributed = match &args.server {
        None => crate::commands::worker::distributed_details(&args.store, args.run_id).await?,
        Some(_) => None,
    };
    if args.json {
        match &distributed {
            Some((parts, workers)) => {
                let doc = serde_json::to_value(&doc).map_err(|e| CliError::runtime(e.to_string()))?;
                print_json(&crate::commands::worker::details_json(doc, parts, workers))?;
            }
            None => print_json(&doc)?,
        }
        return Ok(code::OK);
    }
    outln!("run {} ({})", doc.run_id, doc.pipeline);
    outln!("  status:   {}", doc.status);
    outln!("  phase:    {}", doc.current_phase);
    outln!("  counts:   {}", summary_line(&doc.counts));
    if let Some(cp) = &doc.checkpoint {
        // Later phases count apart, in the order they ran.
        let later = cp.phases_done.iter().skip(1).chain(cp.in_later_phase().then_some(&cp.phase));
        for phase in later {
            let counts = cp.phase_counts.get(phase).copied().unwrap_or_default();
            let state = if cp.phase_done(phase) || doc.status == RunStatus::Completed { "done" } else { "in progress" };
            outln!("    {phase} ({state}): {}", summary_line(&counts));
        }
    }
    let cost = &doc.cost;
    if cost.llm_calls + cost.embedding_calls + cost.calls_saved > 0 {
        outln!(
            "  cost:     llm_calls={} embedding_calls={} tokens_in={} tokens_out={} calls_saved={}",
            cost.llm_calls,
            cost.embedding_calls,
            cost.tokens_in,
            cost.tokens_out,
            cost.calls_saved
        );
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
            let state =
                if pos.done { "done".to_string() } else { format!("cursor={:?} skip={}", pos.cursor, pos.skip) };
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
