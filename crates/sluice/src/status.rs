//! The status document of a run: the one shape `sluice status --json` and the
//! HTTP API answer with. Every count in it is read from the checkpoint, so
//! the status and the checkpoint cannot disagree.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::{Checkpoint, Counts, RunInfo, RunStatus};
use utoipa::ToSchema;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStatusDoc {
    pub run_id: i64,
    pub pipeline: String,
    #[schema(value_type = String, example = "running")]
    pub status: RunStatus,
    pub current_phase: String,
    pub conversations_fetched: u64,
    pub conversations_filtered: u64,
    pub conversations_classified: u64,
    pub conversations_stored: u64,
    #[schema(value_type = Object)]
    pub counts: Counts,
    /// The checkpoint as committed, plus `intercom_cursor` for a one-partition Intercom run.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<CheckpointView>,
    /// The cost ledger: paid calls and tokens (from the checkpoint) and calls saved by the content-hash skip.
    #[serde(default)]
    pub cost: CostDoc,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl RunStatusDoc {
    pub fn new(run: &RunInfo) -> Self {
        let counts = run.checkpoint.as_ref().map(|c| c.counts).unwrap_or_default();
        Self {
            run_id: run.id,
            pipeline: run.pipeline.clone(),
            status: run.status,
            current_phase: run.checkpoint.as_ref().map_or_else(|| run.phase.clone(), |c| c.phase.clone()),
            conversations_fetched: counts.fetched,
            conversations_filtered: counts.filtered,
            conversations_classified: counts.classified,
            conversations_stored: counts.stored,
            counts,
            checkpoint: run.checkpoint.clone().map(|checkpoint| CheckpointView::new(checkpoint, &run.config)),
            cost: run.checkpoint.as_ref().map(CostDoc::new).unwrap_or_default(),
            date_from: run.date_from.clone(),
            date_to: run.date_to.clone(),
            started_at: run.started_at.clone(),
            updated_at: run.updated_at.clone(),
            finished_at: run.finished_at.clone(),
            error: run.error.clone(),
        }
    }
}

/// What a run paid for, cumulative across resumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CostDoc {
    /// LLM calls made (answered; unusable answers included).
    pub llm_calls: u64,
    /// Embedding calls made.
    pub embedding_calls: u64,
    /// Tokens sent, as the APIs reported them.
    pub tokens_in: u64,
    /// Tokens received.
    pub tokens_out: u64,
    /// Stage calls not made because a stored result for the same content was reused
    /// (`counts.skipped_unchanged`).
    pub calls_saved: u64,
}

impl CostDoc {
    pub fn new(checkpoint: &Checkpoint) -> Self {
        let cost = checkpoint.cost;
        Self {
            llm_calls: cost.llm_calls,
            embedding_calls: cost.embedding_calls,
            tokens_in: cost.tokens_in,
            tokens_out: cost.tokens_out,
            calls_saved: checkpoint.counts.skipped_unchanged,
        }
    }
}

/// A checkpoint as the status shows it: the committed checkpoint unchanged,
/// plus the runbook's `intercom_cursor` (the cursor of the page being
/// consumed, `null` on the first page) while the run reads Intercom with one
/// partition. Dereferences to the [`Checkpoint`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointView {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercom_cursor: Option<Value>,
}

impl CheckpointView {
    /// `config` is the run's saved pipeline file (its `source.kind` tells an Intercom run).
    pub fn new(checkpoint: Checkpoint, config: &Value) -> Self {
        let intercom = config.pointer("/source/kind").and_then(Value::as_str) == Some("intercom");
        // Later phases page through the store, not Intercom: their cursor is not one.
        let intercom_cursor =
            (intercom && !checkpoint.in_later_phase() && checkpoint.partitions.len() <= 1).then(|| {
                checkpoint.partitions.values().next().and_then(|p| p.cursor.clone()).map_or(Value::Null, Value::String)
            });
        Self { checkpoint, intercom_cursor }
    }
}

impl Deref for CheckpointView {
    type Target = Checkpoint;

    fn deref(&self) -> &Checkpoint {
        &self.checkpoint
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_core::{CostLedger, Position};

    use super::*;

    fn run(config: Value, checkpoint: Checkpoint) -> RunInfo {
        RunInfo {
            id: 3,
            pipeline: "intercom".into(),
            status: RunStatus::Stopped,
            phase: "classification".into(),
            checkpoint: Some(checkpoint),
            config,
            date_from: Some("2025-10-01".into()),
            date_to: Some("2025-12-30".into()),
            started_at: String::new(),
            updated_at: String::new(),
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn an_intercom_run_shows_its_cursor_and_cost_ledger() {
        let mut cp = Checkpoint::new("classification");
        cp.batches = 2;
        cp.counts.skipped_unchanged = 5;
        cp.cost = CostLedger { llm_calls: 95, embedding_calls: 0, tokens_in: 9000, tokens_out: 1200 };
        cp.partitions
            .insert("2025-10-01..2025-12-30".into(), Position { cursor: Some("abc".into()), ..Position::default() });
        let doc = RunStatusDoc::new(&run(json!({"source": {"kind": "intercom"}}), cp.clone()));
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["checkpoint"]["intercom_cursor"], "abc");
        assert_eq!(v["checkpoint"]["phase"], "classification");
        assert_eq!(v["checkpoint"]["batches"], 2);
        assert_eq!(v["checkpoint"]["cost"]["llm_calls"], 95);
        assert_eq!(
            v["cost"],
            json!({"llm_calls": 95, "embedding_calls": 0, "tokens_in": 9000, "tokens_out": 1200, "calls_saved": 5})
        );
        // The document reads back (the remote client parses it).
        let back: RunStatusDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back.checkpoint.as_ref().map(|c| c.batches), Some(2));
        assert_eq!(back.cost.llm_calls, 95);

        // First page: the cursor is null, but there.
        let mut first = cp.clone();
        first.partitions.values_mut().for_each(|p| p.cursor = None);
        let v = serde_json::to_value(RunStatusDoc::new(&run(json!({"source": {"kind": "intercom"}}), first))).unwrap();
        assert!(v["checkpoint"].as_object().unwrap().contains_key("intercom_cursor"));
        assert_eq!(v["checkpoint"]["intercom_cursor"], Value::Null);

        // Other sources, or several partitions: no such field.
        let v =
            serde_json::to_value(RunStatusDoc::new(&run(json!({"source": {"kind": "jsonl"}}), cp.clone()))).unwrap();
        assert!(!v["checkpoint"].as_object().unwrap().contains_key("intercom_cursor"));
        let mut split = cp;
        split.partitions.insert("2/2 x..y".into(), Position::default());
        let v = serde_json::to_value(RunStatusDoc::new(&run(json!({"source": {"kind": "intercom"}}), split))).unwrap();
        assert!(!v["checkpoint"].as_object().unwrap().contains_key("intercom_cursor"));
    }
}
