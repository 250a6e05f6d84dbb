//! The `Store` role: runs, documents and failures, with a batch and its
//! checkpoint committed atomically.

use std::any::Any;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{Checkpoint, CostLedger};
use crate::error::StoreError;
use crate::record::Document;

pub type RunId = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Stopping,
    Stopped,
    Failed,
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Stopping => "stopping",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
            RunStatus::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "stopping" => RunStatus::Stopping,
            "stopped" => RunStatus::Stopped,
            "failed" => RunStatus::Failed,
            "completed" => RunStatus::Completed,
            _ => return None,
        })
    }

    /// A run in this state holds (or held, if its process died) the store's run slot.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Stopping)
    }

    /// States from which a run may be resumed (with a non-empty checkpoint).
    pub fn is_resumable(self) -> bool {
        matches!(self, RunStatus::Stopped | RunStatus::Failed | RunStatus::Stopping)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a new run row starts with.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    /// Name of the pipeline (from its config), used to find runs to resume.
    pub pipeline: String,
    pub phase: String,
    /// The resolved configuration, so a resume uses the original settings.
    pub config: Value,
    /// Written to the row's `date_from`/`date_to` columns.
    pub window: Option<RunWindow>,
}

/// The part of its source's data a run covers, as the source names it (a
/// range of days, `YYYY-MM-DD`), kept with the run row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunWindow {
    pub from: String,
    pub to: String,
}

/// A row of `pipeline_runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: RunId,
    pub pipeline: String,
    pub status: RunStatus,
    pub phase: String,
    pub checkpoint: Option<Checkpoint>,
    pub config: Value,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

/// A record that could not be processed, for the failures table (dead-letter queue).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub source: String,
    pub record_id: String,
    /// `source` for fetch/parse failures, else the stage name.
    pub stage: String,
    pub error_type: String,
    pub error: String,
    pub retryable: bool,
    pub retry_count: u32,
    /// The record as JSON when there was one (retryable through the pipeline),
    /// else the raw input.
    pub payload: String,
    pub has_record: bool,
}

/// A row of the failures table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRow {
    pub id: i64,
    pub run_id: RunId,
    #[serde(flatten)]
    pub failure: Failure,
    pub created_at: String,
    /// The run whose retry stored this record, once one did.
    pub resolved_by: Option<RunId>,
}

/// What one commit writes besides the checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    pub documents: Vec<Document>,
    pub failures: Vec<Failure>,
    /// Stage results to remember, so unchanged content is not paid for again.
    pub memos: Vec<MemoEntry>,
    /// What later phases add to stored documents (not an upsert of the record).
    pub updates: Vec<DocumentUpdate>,
    /// Results of a run that belong to no single document (themes, stories).
    pub results: Vec<PhaseResult>,
    /// Documents the source found gone (a crawled page now 404/410, a deleted file).
    pub deletions: Vec<Deletion>,
    /// The fingerprint of the pipeline that made `documents` (see
    /// [`Stage::fingerprint`](crate::stage::Stage::fingerprint)), stored
    /// with each, so a later run can tell it would make them alike.
    pub fingerprint: Option<String>,
}

/// What becomes of a stored document whose source item is gone
/// (`on_delete` in a source's settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Kept, with a tombstone (`deleted_documents`): reads, later phases and
    /// search skip it; storing it again (the page is back) lifts the mark.
    #[default]
    Mark,
    /// Deleted from the store, with its chunks.
    Remove,
}

/// A stored document `(source, id)` the source reports gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub source: String,
    pub id: String,
    pub action: OnDelete,
}

/// A later phase's additions to a stored document: its embedding, if the
/// phase computed one, and its annotations (replacing the stored ones).
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentUpdate {
    pub source: String,
    pub id: String,
    pub embedding: Option<Vec<f32>>,
    pub annotations: serde_json::Map<String, Value>,
}

impl DocumentUpdate {
    /// What a later phase writes for a document it kept.
    pub fn of(doc: &Document) -> Self {
        Self {
            source: doc.source().to_string(),
            id: doc.id().to_string(),
            embedding: doc.embedding.clone(),
            annotations: doc.annotations.clone(),
        }
    }
}

/// One result of a run, keyed by `(run, kind, key)`: writing it again replaces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// What it is, e.g. `theme` or `story`.
    pub kind: String,
    pub key: String,
    pub value: Value,
}

/// A record's content, as a memo lookup key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoKey {
    pub source: String,
    pub id: String,
    pub content_hash: String,
}

/// A stage's result for one record's content, produced under `fingerprint`
/// (model, prompt, labels...). Kept per `(source, id, stage)`; a lookup hits
/// only when both the content hash and the fingerprint still match.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoEntry {
    pub source: String,
    pub id: String,
    pub stage: String,
    pub fingerprint: String,
    pub content_hash: String,
    pub value: Value,
}

/// Where an incremental run of a pipeline starts: its last completed run,
/// and the greatest `updated_at` of the documents that run or an earlier run
/// of the pipeline wrote (`None`: they wrote none with a time).
#[derive(Clone, Debug, PartialEq)]
pub struct HighWaterMark {
    pub run: RunInfo,
    pub updated_at: Option<i64>,
}

/// Held while a run is active; dropping it frees the store's run slot.
pub type ActiveRunGuard = Box<dyn Any + Send + Sync>;

#[async_trait]
pub trait Store: Send + Sync {
    /// A short description for logs, e.g. `sqlite:/path/to/sluice.db`.
    fn describe(&self) -> String;

    /// Takes the store's single run slot, or answers `Busy` with the active
    /// run. Runs left `running`/`stopping` by a process that died are marked
    /// `failed` (resumable) when the slot is taken.
    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError>;

    /// Whether some process holds the run slot right now, so readers can tell
    /// a `running` row with a live process from one left by a dead process;
    /// `None` when the store cannot tell.
    async fn run_slot_held(&self) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }

    async fn create_run(&self, new: &NewRun) -> Result<RunInfo, StoreError>;
    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError>;
    /// The latest runs, newest first.
    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError>;
    async fn set_status(&self, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError>;

    /// Upserts the documents by `(source, id)`, inserts the failures and writes
    /// the checkpoint, all in one transaction. The checkpoint's `cost` never
    /// lowers a stored one (see [`write_ahead`](Store::write_ahead)).
    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Stored results of `stage` for these records, where the content hash and
    /// the fingerprint still match; one answer per key, in order. Stores that
    /// keep no memo answer all misses.
    async fn memo_lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        keys: &[MemoKey],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        let _ = (stage, fingerprint);
        Ok(vec![None; keys.len()])
    }

    /// Whether each record is stored with this content hash and was made
    /// by a pipeline of this fingerprint (so running it again would write
    /// the same row); one answer per key, in order, in one read. Stores
    /// that keep no fingerprint answer all no.
    async fn unchanged(&self, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
        let _ = fingerprint;
        Ok(vec![false; keys.len()])
    }

    /// Whether the store holds any document at all, marked deleted or not.
    /// A run that starts on a store without one asks [`unchanged`](Store::unchanged)
    /// nothing: every answer would be no but for a record the run itself
    /// meets twice, which then only goes through the stages again. Stores
    /// that cannot tell cheaply answer yes, and the lookup runs.
    async fn holds_documents(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Stores stage results the moment they are paid for, ahead of their
    /// batch, in a short transaction of its own, together with the run's
    /// cost ledger `cost`, kept in its checkpoint (a run with no batch
    /// committed yet gets an empty one, which still resumes nothing, so a
    /// kill before the first commit keeps the ledger). The stored ledger only
    /// grows: each field becomes the larger of the stored one and `cost`, here
    /// and in [`commit`](Store::commit), whichever lands first. Stores that
    /// keep no memo store only the ledger, or nothing.
    async fn write_ahead(&self, run: RunId, memos: &[MemoEntry], cost: &CostLedger) -> Result<(), StoreError> {
        let _ = (run, memos, cost);
        Ok(())
    }

    /// Up to `limit` stored documents of `source` with ids after `after`, in
    /// id order, with what stages and phases added (chunks left out), those
    /// marked deleted left out. Later phases read the store through this.
    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        let _ = (source, after, limit);
        Err(StoreError::Contract { message: format!("{} cannot be read back by later phases", self.describe()) })
    }

    /// How many documents of `source` are stored: what a later phase reads,
    /// for its progress total. `None` from a store that cannot say cheaply.
    async fn count_documents(&self, source: &str) -> Result<Option<u64>, StoreError> {
        let _ = source;
        Ok(None)
    }

    /// The results of `kind` a run wrote, by key.
    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        let _ = (run, kind);
        Ok(Vec::new())
    }

    /// The high-water mark of pipeline `pipeline` over the documents of
    /// `source`; `None` when the pipeline has no completed run.
    async fn high_water_mark(&self, pipeline: &str, source: &str) -> Result<Option<HighWaterMark>, StoreError> {
        let _ = (pipeline, source);
        Err(StoreError::Contract {
            message: format!("{} keeps no high-water mark for incremental runs", self.describe()),
        })
    }

    /// The ids of the documents of `source` marked deleted ([`OnDelete::Mark`]),
    /// which [`scan_documents`](Store::scan_documents) leaves out. Stores that
    /// keep no marks answer none.
    async fn deleted_ids(&self, source: &str) -> Result<Vec<String>, StoreError> {
        let _ = source;
        Ok(Vec::new())
    }

    /// The failures recorded by a run, oldest first.
    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError>;
    /// Marks the failures of `run` whose record `retry_run` stored as resolved
    /// by it; returns how many.
    async fn resolve_failures(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError>;
    /// Marks the failures of `run` that had no record (a crawl's page that
    /// could not be fetched) as resolved by `retry_run` when it fetched and
    /// stored that page again; returns how many. Stores that keep no
    /// failures resolve none.
    async fn resolve_refetched(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        let _ = (run, retry_run);
        Ok(0)
    }
}
