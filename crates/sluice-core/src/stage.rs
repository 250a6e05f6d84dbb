//! The `Stage` role: turn a batch of documents into outcomes, one per document.

use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::StageError;
use crate::record::Document;

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

    /// What produces this stage's results (model, prompt, labels...). When
    /// set, the engine remembers each kept document's result (`memo_value`)
    /// with the record's content hash, and on a later batch with the same
    /// content and fingerprint puts it back (`memo_apply`) instead of calling
    /// `process`: a restart or re-run does not pay for the same work twice.
    fn fingerprint(&self) -> Option<String> {
        None
    }

    /// The result to remember for a kept document.
    fn memo_value(&self, doc: &Document) -> Option<serde_json::Value> {
        let _ = doc;
        None
    }

    /// Puts a remembered result back on a document; false if it does not fit
    /// (the document then goes through `process`).
    fn memo_apply(&self, doc: &mut Document, value: &serde_json::Value) -> bool {
        let _ = (doc, value);
        false
    }
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
