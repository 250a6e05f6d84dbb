//! `sluice failures`: the dead-letter queue of a run, and retrying it.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_connectors::{PipelineFile, build_pipeline};
use sluice_core::{Context, FailureRow, Page, Record, RunStatus, Source, SourceError, SourceItem, Start};

use crate::cli::{FailuresAction, FailuresArgs, StoreArgs};
use crate::commands::output::print_json;
use crate::error::{CliError, code};
use crate::progress::summary_line;
use crate::store_args::open_store_args;

pub async fn failures(args: FailuresArgs) -> Result<u8, CliError> {
    match args.action {
        Some(FailuresAction::Retry { run_id, store, json }) => retry(run_id, &store, json).await,
        None => list(args.run_id, &args.store, args.json).await,
    }
}

async fn list(run_id: Option<i64>, store_args: &StoreArgs, json: bool) -> Result<u8, CliError> {
    let store: Arc<dyn sluice_core::Store> = open_store_args(store_args)?;
    let run_id = match run_id {
        Some(id) => id,
        None => match store.list_runs(1).await?.first() {
            Some(run) => run.id,
            None => return Err(CliError::usage(format!("no runs in {}", store.describe()))),
        },
    };
    let rows = store.failures(run_id).await?;
    if json {
        print_json(&rows)?;
        return Ok(code::OK);
    }
    if rows.is_empty() {
        outln!("run {run_id} has no failed records");
        return Ok(code::OK);
    }
    outln!("run {run_id}: {} failed records", rows.len());
    for row in &rows {
        let f = &row.failure;
        let resolved = row.resolved_by.map(|r| format!(" (resolved by run {r})")).unwrap_or_default();
        outln!("  [{}] {}/{} at {}: {} ({}){resolved}", row.id, f.source, f.record_id, f.stage, f.error, f.error_type);
    }
    Ok(code::OK)
}

/// Re-runs the failed records of a run (those the source could parse) through
/// its pipeline's stages into the store, as a new run; records stored by it
/// are marked resolved.
async fn retry(run_id: i64, store_args: &StoreArgs, json: bool) -> Result<u8, CliError> {
    let store: Arc<dyn sluice_core::Store> = open_store_args(store_args)?;
    let run = store.get_run(run_id).await?.ok_or_else(|| CliError::usage(format!("run {run_id} not found")))?;
    let rows = store.failures(run_id).await?;
    let mut records = Vec::new();
    let mut unparseable = 0;
    for row in rows.iter().filter(|r| r.resolved_by.is_none()) {
        match retryable_record(row) {
            Some(record) => records.push(record),
            None => unparseable += 1,
        }
    }
    if unparseable > 0 {
        errln!(
            "{unparseable} failures have no record to retry (the source could not read them); fix the input and re-run"
        );
    }
    if records.is_empty() {
        errln!("run {run_id}: nothing to retry");
        return Ok(code::OK);
    }
    let file = PipelineFile::from_saved(&run.config)?;
    let mut pipeline_file = file.clone();
    pipeline_file.name = Some(format!("{}:retry-of-{run_id}", file.name.clone().unwrap_or_default()));
    pipeline_file.max_records = None;
    let pipeline = build_pipeline(&pipeline_file, store.clone())?;
    let source = Arc::new(RecordsSource { name: "failures".into(), records: Arc::new(records) });
    let pipeline = pipeline.with_source(source);
    let summary = pipeline.run(Start::New).await?;
    let resolved = store.resolve_failures(run_id, summary.run_id).await?;
    if json {
        print_json(&serde_json::json!({ "retry_run_id": summary.run_id, "resolved": resolved, "summary": summary }))?;
    }
    errln!(
        "retry run {} {}: {}; {resolved} failures of run {run_id} resolved",
        summary.run_id,
        summary.status,
        summary_line(&summary.counts)
    );
    Ok(if summary.status == RunStatus::Completed { code::OK } else { code::FAILED })
}

pub(crate) fn retryable_record(row: &FailureRow) -> Option<Record> {
    if !row.failure.has_record {
        return None;
    }
    serde_json::from_str(&row.failure.payload).ok()
}

/// A source over records held in memory (the failures being retried).
pub(crate) struct RecordsSource {
    pub(crate) name: String,
    pub(crate) records: Arc<Vec<Record>>,
}

const PAGE: usize = 100;

#[async_trait]
impl Source for RecordsSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, _ctx: &Context, _partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let start: usize = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| SourceError::CursorInvalid { message: format!("bad cursor {c}") })?,
        };
        let end = (start + PAGE).min(self.records.len());
        let items = self.records.get(start..end).unwrap_or_default().iter().cloned().map(SourceItem::Record).collect();
        Ok(Page { items, next: (end < self.records.len()).then(|| end.to_string()), dropped: 0 })
    }

    async fn estimated_total(&self) -> Option<u64> {
        Some(self.records.len() as u64)
    }
}
