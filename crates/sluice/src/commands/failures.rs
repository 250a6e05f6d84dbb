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
/// are marked resolved. A crawl's failed pages (a 404, a dropped connection)
/// have no record: they are fetched again, each alone (no links followed).
async fn retry(run_id: i64, store_args: &StoreArgs, json: bool) -> Result<u8, CliError> {
    let store: Arc<dyn sluice_core::Store> = open_store_args(store_args)?;
    let run = store.get_run(run_id).await?.ok_or_else(|| CliError::usage(format!("run {run_id} not found")))?;
    let file = PipelineFile::from_saved(&run.config)?;
    let rows = store.failures(run_id).await?;
    let mut records = Vec::new();
    let mut pages = Vec::new();
    let mut unparseable = 0;
    for row in rows.iter().filter(|r| r.resolved_by.is_none()) {
        if let Some(record) = retryable_record(row) {
            records.push(record);
        } else if let Some(url) = refetchable_page(&file, row) {
            pages.push(url);
        } else {
            unparseable += 1;
        }
    }
    if unparseable > 0 {
        errln!(
            "{unparseable} failures have no record to retry (the source could not read them); fix the input and re-run"
        );
    }
    if records.is_empty() && pages.is_empty() {
        errln!("run {run_id}: nothing to retry");
        return Ok(code::OK);
    }
    let mut code = code::OK;
    if !records.is_empty() {
        let source = Arc::new(RecordsSource { name: "failures".into(), records: Arc::new(records) });
        let pipeline = build_pipeline(&retry_file(&file, run_id)?, store.clone())?.with_source(source);
        code = code.max(finish_retry(&store, run_id, pipeline.run(Start::New).await?, false, json).await?);
    }
    if !pages.is_empty() {
        let count = pages.len();
        errln!("fetching {count} failed page{} of run {run_id} again", if count == 1 { "" } else { "s" });
        let file = refetch_file(&retry_file(&file, run_id)?, pages)?;
        let pipeline = build_pipeline(&file, store.clone())?;
        code = code.max(finish_retry(&store, run_id, pipeline.run(Start::New).await?, true, json).await?);
    }
    Ok(code)
}

/// The run's settings under a retry's name, without its record limit.
fn retry_file(file: &PipelineFile, run_id: i64) -> Result<PipelineFile, CliError> {
    let mut retry = file.clone();
    retry.name = Some(format!("{}:retry-of-{run_id}", file.name.clone().unwrap_or_default()));
    retry.max_records = None;
    Ok(retry)
}

/// The crawl of `file`, narrowed to fetching `urls` again: they are the start
/// URLs, no link is followed, no page limit applies.
fn refetch_file(file: &PipelineFile, urls: Vec<String>) -> Result<PipelineFile, CliError> {
    let mut value = serde_json::to_value(file).map_err(|e| CliError::runtime(e.to_string()))?;
    let source = &mut value["source"];
    source["start_urls"] = serde_json::json!(urls);
    source["max_depth"] = serde_json::json!(0);
    if let Some(table) = source.as_object_mut() {
        table.remove("max_pages");
    }
    Ok(PipelineFile::from_saved(&value)?)
}

/// A crawl's page that failed to be fetched: its URL, when the run crawled.
fn refetchable_page(file: &PipelineFile, row: &FailureRow) -> Option<String> {
    if file.source.tag() != "crawl" || row.failure.stage != "source" {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_str(&row.failure.payload).ok()?;
    payload["url"].as_str().map(str::to_string)
}

/// Marks what the retry stored as resolved and says how it went.
async fn finish_retry(
    store: &Arc<dyn sluice_core::Store>,
    run_id: i64,
    summary: sluice_core::RunSummary,
    refetched: bool,
    json: bool,
) -> Result<u8, CliError> {
    let resolved = if refetched {
        store.resolve_refetched(run_id, summary.run_id).await?
    } else {
        store.resolve_failures(run_id, summary.run_id).await?
    };
    if json {
        print_json(&serde_json::json!({ "retry_run_id": summary.run_id, "resolved": resolved, "summary": summary }))?;
    }
    errln!(
        "retry run {} {}: {}; {resolved} failures of run {run_id} resolved",
        summary.run_id,
        summary.status,
        summary_line(&summary.counts)
    );
    if summary.counts.failed > 0 {
        errln!(
            "{} still failing: `sluice failures {}` (with the same -c or --db) lists them",
            summary.counts.failed,
            summary.run_id
        );
    }
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
