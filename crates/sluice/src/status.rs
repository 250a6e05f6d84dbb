//! The status document of a run: the one shape `sluice status --json` and the
//! HTTP API answer with. Every count in it is read from the checkpoint, so
//! the status and the checkpoint cannot disagree.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::{Checkpoint, Counts, RunInfo, RunStatus, Store};
use utoipa::ToSchema;

use sluice_connectors::store::postgres::distributed::{PartitionRow, WorkerRow};

use crate::prices::{Money, money};

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
    /// Seen again with the same content by the same pipeline: not processed, not rewritten.
    #[serde(default)]
    pub conversations_unchanged: u64,
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
    /// For a `running` or `stopping` run: whether a process holds the
    /// store's run slot. `false` means the process is gone (the run is
    /// resumable, or to start anew when nothing was committed); absent when
    /// the run is not active or the store cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_process: Option<bool>,
    /// What `live_process: false` means for this run, e.g. "no live worker:
    /// resumable by starting a worker" (absent while something is behind it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_note: Option<String>,
    /// Records that failed, per phase (only phases with failures), so a run
    /// that lost records never looks clean.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub failed_by_phase: std::collections::BTreeMap<String, u64>,
    /// Documents that theme_extraction (no embedding) and story_creation
    /// (theme too small) left out, per phase.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub left_out_by_phase: std::collections::BTreeMap<String, u64>,
    /// What the tokens cost in US dollars, by the pipeline file's `[prices]`
    /// or the default list prices; absent when nothing was paid or a model has no price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The cost as the CLI prints it, or why it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_text: Option<String>,
    /// `true` for a distributed run (`sluice run --distributed`), whose
    /// `live_process` says whether any worker is alive; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<bool>,
    /// A distributed run's partitions: `name`, `done`, `owner` and
    /// `lease_left_secs` (leased by whom, for how long), `epoch`,
    /// `commit_seq`, and its `checkpoint` (position, counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub partitions: Option<Vec<Value>>,
    /// The workers of the store: `id`, `host`, `pid`, `alive`,
    /// `heartbeat_age_secs` (since the last heartbeat), `refused_commits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub workers: Option<Vec<Value>>,
}

impl RunStatusDoc {
    pub fn new(run: &RunInfo) -> Self {
        let counts = run.checkpoint.as_ref().map(|c| c.counts).unwrap_or_default();
        let cost = run.checkpoint.as_ref().map(|c| c.cost).unwrap_or_default();
        Self {
            run_id: run.id,
            pipeline: run.pipeline.clone(),
            status: run.status,
            current_phase: run.checkpoint.as_ref().map_or_else(|| run.phase.clone(), |c| c.phase.clone()),
            conversations_fetched: counts.fetched,
            conversations_filtered: counts.filtered,
            conversations_classified: counts.classified,
            conversations_stored: counts.stored,
            conversations_unchanged: counts.unchanged,
            counts,
            checkpoint: run.checkpoint.clone().map(|checkpoint| CheckpointView::new(checkpoint, &run.config)),
            cost: run.checkpoint.as_ref().map(CostDoc::new).unwrap_or_default(),
            date_from: run.date_from.clone(),
            date_to: run.date_to.clone(),
            started_at: run.started_at.clone(),
            updated_at: run.updated_at.clone(),
            finished_at: run.finished_at.clone(),
            error: run.error.clone(),
            live_process: None,
            live_note: None,
            cost_usd: match money(&run.config, &cost) {
                Money::Usd { amount, .. } => Some(amount),
                Money::Free | Money::Unpriced(_) => None,
            },
            cost_text: money(&run.config, &cost).text(),
            failed_by_phase: run.checkpoint.as_ref().map(failures_by_phase).unwrap_or_default().into_iter().collect(),
            left_out_by_phase: run.checkpoint.as_ref().map(left_out_by_phase).unwrap_or_default().into_iter().collect(),
            distributed: None,
            partitions: None,
            workers: None,
        }
    }

    /// The document of a distributed run: with its partitions and the
    /// workers, and live while any worker is (workers hold it, not the run slot).
    pub fn with_distributed(mut self, partitions: &[PartitionRow], workers: &[WorkerRow]) -> Self {
        self.distributed = Some(true);
        self.partitions = Some(partitions.iter().filter_map(|p| serde_json::to_value(p).ok()).collect());
        self.workers = Some(workers.iter().filter_map(|w| serde_json::to_value(w).ok()).collect());
        self.live_process = self.status.is_active().then(|| workers.iter().any(|w| w.alive));
        self.live_note = self.orphan_note();
        self
    }

    /// Why nothing moves a `running` run whose process (or every worker) is gone, and what to do.
    fn orphan_note(&self) -> Option<String> {
        (self.live_process == Some(false)).then(|| {
            if self.distributed == Some(true) {
                "no live worker: resumable by starting a worker (sluice worker --store URL)".to_string()
            } else if self.committed_anything() {
                "no live process: resumable".to_string()
            } else {
                "no live process, nothing committed: start a new run".to_string()
            }
        })
    }

    /// The document of `run`, with whether a process is behind it if it is active.
    pub async fn read(store: &dyn Store, run: &RunInfo) -> Self {
        Self::new(run).with_slot(slot_held(store).await)
    }

    /// Sets [`Self::live_process`] from whether the store's run slot is held (`None`: unknown).
    pub fn with_slot(mut self, held: Option<bool>) -> Self {
        self.live_process = if self.status.is_active() { held } else { None };
        self.live_note = self.orphan_note();
        self
    }

    /// Whether anything was committed, so a resume has something to resume from.
    pub fn committed_anything(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// The status as people read it: `running (no live process: resumable)`
    /// for a run whose process is gone.
    pub fn status_text(&self) -> String {
        match &self.live_note {
            Some(note) => format!("{} ({note})", self.status),
            None => self.status.to_string(),
        }
    }
}

/// Records that failed in each phase that failed any, in the order the
/// phases ran: the first phase's from the checkpoint's counts, each later
/// one's from its own counts.
pub fn failures_by_phase(cp: &Checkpoint) -> Vec<(String, u64)> {
    let first = cp.phases_done.first().cloned().unwrap_or_else(|| cp.phase.clone());
    let mut phases = vec![(first, cp.counts.failed)];
    let later = cp.phases_done.iter().skip(1).chain(cp.in_later_phase().then_some(&cp.phase));
    for phase in later {
        phases.push((phase.clone(), cp.phase_counts.get(phase).map_or(0, |c| c.failed)));
    }
    phases.retain(|(_, failed)| *failed > 0);
    phases
}

/// Documents that the whole-store phases (themes, stories) left out, by phase.
pub fn left_out_by_phase(cp: &Checkpoint) -> Vec<(String, u64)> {
    ["theme_extraction", "story_creation"]
        .into_iter()
        .filter_map(|phase| cp.phase_counts.get(phase).map(|c| (phase.to_string(), c.filtered)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// What a run's end says beyond its counts: the failures per phase and
/// what themes and stories left out, e.g. `failed: classification=3; left
/// out: theme_extraction=2 documents`; empty when nothing failed.
pub fn failure_text(cp: &Checkpoint) -> String {
    let join = |items: Vec<(String, u64)>| items.iter().map(|(p, n)| format!("{p}={n}")).collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    let failed = failures_by_phase(cp);
    if !failed.is_empty() {
        parts.push(format!("FAILED records: {}", join(failed)));
    }
    let left_out = left_out_by_phase(cp);
    if !left_out.is_empty() {
        parts.push(format!("documents left out: {}", join(left_out)));
    }
    parts.join("; ")
}

/// The paid work of a run: `llm_calls=.. embedding_calls=.. tokens_in=.. tokens_out=..`.
pub fn cost_text(cost: &CostDoc) -> String {
    format!(
        "llm_calls={} embedding_calls={} tokens_in={} tokens_out={}",
        cost.llm_calls, cost.embedding_calls, cost.tokens_in, cost.tokens_out
    )
}

/// Whether some process holds the store's run slot; `None` if the store
/// cannot tell or cannot be asked (a status read must not fail on it).
pub async fn slot_held(store: &dyn Store) -> Option<bool> {
    match store.run_slot_held().await {
        Ok(held) => held,
        Err(error) => {
            tracing::debug!(%error, "cannot tell whether a process holds the run slot");
            None
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
        cp.cost = CostLedger {
            llm_calls: 95,
            embedding_calls: 0,
            tokens_in: 9000,
            tokens_out: 1200,
            ..CostLedger::default()
        };
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
