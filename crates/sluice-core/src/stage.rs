//! The `Stage` role: turn a batch of documents into outcomes, one per document.

use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::StageError;
use crate::record::Document;
use crate::store::MemoEntry;

/// What a stage did with one document.
#[derive(Debug)]
pub enum Outcome {
    /// Goes on to the next stage (possibly changed: normalized, labelled, chunked).
    Kept(Document),
    /// Dropped on purpose (e.g. too short); counted as filtered.
    Filtered { doc: Document, reason: String },
    /// The stage could not handle it. Retryable failures are tried again by the
    /// engine; the rest go to the failures table.
    Failed { doc: Document, error: StageError },
}

/// Which cumulative counter a stage's kept documents add to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageCounter {
    Classified,
    Embedded,
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &str;

    /// Returns exactly one outcome per input document, in input order. An
    /// `Err` fails the whole batch: retried if retryable, else the run fails.
    async fn process(&self, ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError>;

    /// The counter this stage's kept documents add to, if any.
    fn counter(&self) -> Option<StageCounter> {
        None
    }

    /// How this stage's results are remembered, if they are worth it (a paid
    /// call): the engine then stores each kept document's result with the
    /// record's content hash, and on a later batch with the same content and
    /// fingerprint puts it back instead of calling `process`, so a restart or
    /// a re-run does not pay for the same work twice.
    fn memo(&self) -> Option<&dyn Memo> {
        None
    }

    /// What in this stage's configuration shapes the documents it keeps
    /// (sizes, model, prompt, rules...), or `None` when it cannot tell. A
    /// stored document made from the same content by stages whose
    /// fingerprints all match is skipped whole by a later run: not sent
    /// through the stages, not rewritten. One stage answering `None` turns
    /// that off for its pipeline.
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

/// A memoisable stage's three answers, which must agree with each other.
pub trait Memo: Send + Sync {
    /// What produces the results (model, prompt, labels...). A stored
    /// result is reused only under the same fingerprint.
    fn fingerprint(&self) -> String;

    /// The result to remember for a kept document.
    fn value(&self, doc: &Document) -> Option<serde_json::Value>;

    /// Puts a remembered result back on a document; false if it does not fit
    /// (the document then goes through `process`).
    fn apply(&self, doc: &mut Document, value: &serde_json::Value) -> bool;
}

/// Stores `doc`'s result through the run's write-ahead, if `stage`
/// remembers its results, and returns once it is stored: a memoising stage
/// calls it for each document the moment the paid answer for it is in
/// (before the rest of its batch is done), so a crash does not throw that
/// answer away. Outside a run, or with the write-ahead off, it does nothing.
pub async fn write_ahead(ctx: &Context, stage: &dyn Stage, doc: &Document) {
    hand_over(ctx, stage, doc);
    ctx.write_ahead.flush().await;
}

/// As [`write_ahead`], without waiting for it to be stored.
pub fn hand_over(ctx: &Context, stage: &dyn Stage, doc: &Document) {
    if !ctx.write_ahead.is_enabled() {
        return;
    }
    let Some(memo) = stage.memo() else { return };
    let Some(value) = memo.value(doc) else { return };
    ctx.write_ahead.remember(MemoEntry {
        source: doc.source().to_string(),
        id: doc.id().to_string(),
        stage: stage.name().to_string(),
        fingerprint: memo.fingerprint(),
        content_hash: doc.content_hash.clone(),
        value,
    });
}

/// A stage with its scheduling knobs.
#[derive(Clone)]
pub struct StageSpec {
    pub stage: Arc<dyn Stage>,
    /// Batches this stage works on at once (order of batches is kept).
    pub workers: usize,
    /// Times a record's retryable failure is retried before it is recorded.
    pub max_retries: u32,
}

impl StageSpec {
    pub fn new(stage: Arc<dyn Stage>) -> Self {
        Self { stage, workers: 1, max_retries: 3 }
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }
}
