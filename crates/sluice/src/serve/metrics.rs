//! Prometheus metrics, fed from a run's events: the same numbers the status
//! and the checkpoint hold, as counters to graph and alert on.

use sluice_core::{CostLedger, Counts, Event, EventKind};

/// Turns one run's events into metric updates. Counters move by the
/// difference between successive checkpoints, so they add up across runs.
#[derive(Default)]
pub struct RunMetrics {
    counts: Option<Counts>,
    cost: Option<CostLedger>,
}

impl RunMetrics {
    pub fn observe(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { counts, cost, .. } => {
                // Counters move from where the run starts, so a resume does not count its past again.
                self.counts = Some(*counts);
                self.cost = Some(*cost);
                metrics::gauge!("sluice_run_active").set(1.0);
                set_run_gauges(counts);
            }
            EventKind::BatchCommitted { checkpoint, commit_ms, .. } => {
                metrics::histogram!("sluice_batch_commit_seconds").record(commit_ms / 1000.0);
                metrics::counter!("sluice_batches_committed_total").increment(1);
                let before = self.counts.replace(checkpoint.counts).unwrap_or(checkpoint.counts);
                let c = &checkpoint.counts;
                set_run_gauges(c);
                for (counter, now, then) in [
                    ("fetched", c.fetched, before.fetched),
                    ("filtered", c.filtered, before.filtered),
                    ("classified", c.classified, before.classified),
                    ("stored", c.stored, before.stored),
                    ("failed", c.failed, before.failed),
                    ("skipped_unchanged", c.skipped_unchanged, before.skipped_unchanged),
                    ("unchanged", c.unchanged, before.unchanged),
                    ("chunks", c.chunks, before.chunks),
                    ("embedded", c.embedded, before.embedded),
                ] {
                    metrics::counter!("sluice_records_total", "counter" => counter).increment(now.saturating_sub(then));
                }
                let cost_before = self.cost.replace(checkpoint.cost).unwrap_or(checkpoint.cost);
                let k = &checkpoint.cost;
                metrics::counter!("sluice_llm_calls_total")
                    .increment(k.llm_calls.saturating_sub(cost_before.llm_calls));
                metrics::counter!("sluice_embedding_calls_total")
                    .increment(k.embedding_calls.saturating_sub(cost_before.embedding_calls));
                metrics::counter!("sluice_tokens_total", "direction" => "in")
                    .increment(k.tokens_in.saturating_sub(cost_before.tokens_in));
                metrics::counter!("sluice_tokens_total", "direction" => "out")
                    .increment(k.tokens_out.saturating_sub(cost_before.tokens_out));
            }
            EventKind::PageFetched { .. } => {
                metrics::counter!("sluice_pages_fetched_total").increment(1);
            }
            EventKind::DocumentFailed { stage, .. } => {
                metrics::counter!("sluice_failures_total", "stage" => stage.clone()).increment(1);
            }
            EventKind::AdapterStateChange { adapter, new_state, .. } if new_state != "ok" => {
                metrics::counter!("sluice_adapter_waits_total", "adapter" => adapter.clone(), "state" => new_state.clone())
                    .increment(1);
            }
            EventKind::CursorFallback { .. } => metrics::counter!("sluice_cursor_fallbacks_total").increment(1),
            EventKind::BatchProgress { rate, .. } => metrics::gauge!("sluice_records_per_second").set(*rate),
            EventKind::RunFinished { status, .. } => {
                metrics::gauge!("sluice_run_active").set(0.0);
                metrics::counter!("sluice_runs_finished_total", "status" => status.as_str()).increment(1);
            }
            _ => {}
        }
    }
}

/// The live stats of the current (or last) run, as the seed's monitor shows
/// them (files, docs, chunks, embeddings, errors): its cumulative counts,
/// including what it did before a resume. Counters above add up across runs;
/// these gauges say where this run stands.
fn set_run_gauges(c: &Counts) {
    for (counter, value) in [
        ("fetched", c.fetched),
        ("stored", c.stored),
        ("chunks", c.chunks),
        ("embedded", c.embedded),
        ("failed", c.failed),
        ("filtered", c.filtered),
        ("classified", c.classified),
        ("skipped_unchanged", c.skipped_unchanged),
        ("unchanged", c.unchanged),
    ] {
        metrics::gauge!("sluice_run_records", "counter" => counter).set(value as f64);
    }
}
