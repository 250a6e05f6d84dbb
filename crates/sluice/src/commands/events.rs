//! `sluice events FILE`: replay an events log into a summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};

use serde::Serialize;
use sluice_core::{Counts, Event, EventKind, RunStatus};

use crate::cli::EventsArgs;
use crate::commands::output::print_json;
use crate::error::{CliError, code};
use crate::progress::summary_line;

/// Failed records listed in the summary at most.
const FAILURES_SHOWN: usize = 20;

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct EventSummary {
    pub runs: BTreeSet<i64>,
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub duration_seconds: f64,
    /// The run's final status, or `None` when the log has no RunFinished (the process died).
    pub status: Option<RunStatus>,
    pub counts: Counts,
    pub batches_committed: u64,
    pub pages_fetched: u64,
    pub cursor_fallbacks: u64,
    pub adapter_state_changes: u64,
    pub failures: Vec<String>,
    pub error: Option<String>,
    pub unreadable_lines: u64,
    pub first_unreadable: Option<String>,
}

impl EventSummary {
    pub fn add(&mut self, event: &Event, first_ts: &mut Option<f64>) {
        self.runs.insert(event.run_id);
        self.events += 1;
        *self.by_type.entry(event.kind.name().to_string()).or_default() += 1;
        let start = *first_ts.get_or_insert(event.ts);
        self.duration_seconds = (event.ts - start).max(0.0);
        match &event.kind {
            EventKind::RunStarted { counts, .. } => self.counts = *counts,
            EventKind::PageFetched { .. } => self.pages_fetched += 1,
            EventKind::BatchCommitted { checkpoint, .. } => {
                self.batches_committed += 1;
                self.counts = checkpoint.counts;
            }
            EventKind::DocumentFailed { doc_id, stage, error, .. } if self.failures.len() < FAILURES_SHOWN => {
                self.failures.push(format!("{} at {stage}: {error}", doc_id.as_deref().unwrap_or("?")));
            }
            EventKind::CursorFallback { .. } => self.cursor_fallbacks += 1,
            EventKind::AdapterStateChange { .. } => self.adapter_state_changes += 1,
            EventKind::RunFinished { status, counts, error, .. } => {
                self.status = Some(*status);
                self.counts = *counts;
                self.error = error.clone();
            }
            _ => {}
        }
    }
}

pub fn read_summary(path: &std::path::Path) -> Result<EventSummary, CliError> {
    let file =
        File::open(path).map_err(|e| CliError::usage(format!("cannot read events file {}: {e}", path.display())))?;
    let mut summary = EventSummary::default();
    let mut first_ts = None;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| CliError::runtime(format!("cannot read {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(event) => summary.add(&event, &mut first_ts),
            Err(e) => {
                summary.unreadable_lines += 1;
                summary.first_unreadable.get_or_insert_with(|| format!("line {}: {e}", index + 1));
            }
        }
    }
    if summary.events == 0 && summary.unreadable_lines > 0 {
        return Err(CliError::usage(format!(
            "{} is not an events log: {}",
            path.display(),
            summary.first_unreadable.as_deref().unwrap_or("")
        )));
    }
    Ok(summary)
}

pub fn summarize(args: EventsArgs) -> Result<u8, CliError> {
    let summary = read_summary(&args.file)?;
    if args.json {
        print_json(&summary)?;
        return Ok(code::OK);
    }
    let runs: Vec<String> = summary.runs.iter().map(i64::to_string).collect();
    outln!("events: {} over {:.1}s (runs {})", summary.events, summary.duration_seconds, runs.join(", "));
    match summary.status {
        Some(status) => outln!("status: {status}"),
        None => outln!("status: unfinished (no RunFinished: the process ended before the run did)"),
    }
    outln!("counts: {}", summary_line(&summary.counts));
    outln!(
        "batches committed: {}, pages fetched: {}, cursor fallbacks: {}, adapter state changes: {}",
        summary.batches_committed,
        summary.pages_fetched,
        summary.cursor_fallbacks,
        summary.adapter_state_changes
    );
    for (kind, n) in &summary.by_type {
        outln!("  {kind:<20} {n}");
    }
    if !summary.failures.is_empty() {
        outln!("failures (first {}):", summary.failures.len());
        for f in &summary.failures {
            outln!("  {f}");
        }
    }
    if let Some(error) = &summary.error {
        outln!("error: {error}");
    }
    if summary.unreadable_lines > 0 {
        errln!(
            "warning: {} unreadable lines skipped (first: {})",
            summary.unreadable_lines,
            summary.first_unreadable.as_deref().unwrap_or("")
        );
    }
    Ok(code::OK)
}
