//! Phases after the first. The first phase reads the source; each later one
//! reads what the store holds and writes what it finds, with its own place in
//! the checkpoint, so a stop or crash in any phase resumes in that phase.

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::Counts;
use crate::context::Context;
use crate::error::{EngineError, SourceError, StoreError};
use crate::record::Document;
use crate::source::{Page, Source, SourceItem};
use crate::stage::StageSpec;
use crate::store::{DocumentUpdate, PhaseResult, RunId, Store};

/// One phase after the first.
#[derive(Clone)]
pub enum PhaseSpec {
    /// Runs stages over the source's stored documents, batch by batch, each
    /// batch committed with the phase's position; writes what the stages add
    /// to each document (embedding, annotations), not the record again.
    Documents { name: String, stages: Vec<StageSpec> },
    /// A computation over everything stored (clustering, grouping), committed
    /// in one transaction with the phase's end: it is done or not at all.
    Task(Arc<dyn PhaseTask>),
}

impl PhaseSpec {
    pub fn documents(name: impl Into<String>, stages: Vec<StageSpec>) -> Self {
        PhaseSpec::Documents { name: name.into(), stages }
    }

    pub fn name(&self) -> &str {
        match self {
            PhaseSpec::Documents { name, .. } => name,
            PhaseSpec::Task(task) => task.name(),
        }
    }
}

/// What a task phase reads.
pub struct PhaseInput<'a> {
    pub store: &'a Arc<dyn Store>,
    pub run_id: RunId,
    /// The source whose stored documents the run covers.
    pub source: &'a str,
}

/// Documents a task phase reads per store call.
const TASK_SCAN_PAGE: usize = 1000;

impl PhaseInput<'_> {
    /// Hands every stored document of the run's source to `visit`, in id
    /// order, reading the store a page at a time.
    pub async fn for_each_document(&self, mut visit: impl FnMut(Document)) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.store.scan_documents(self.source, after.as_deref(), TASK_SCAN_PAGE).await?;
            after = next_after(&page, TASK_SCAN_PAGE);
            page.into_iter().for_each(&mut visit);
            if after.is_none() {
                return Ok(());
            }
        }
    }
}

/// The keyset cursor after a page of `page_size` asked for: its last id, or
/// `None` when the page came back short (the scan is over).
fn next_after(page: &[Document], page_size: usize) -> Option<String> {
    (page.len() == page_size).then(|| page.last().map(|d| d.id().to_string())).flatten()
}

/// What a task phase writes, all at once.
#[derive(Clone, Debug, Default)]
pub struct PhaseOutput {
    pub updates: Vec<DocumentUpdate>,
    pub results: Vec<PhaseResult>,
    pub counts: Counts,
}

#[async_trait]
pub trait PhaseTask: Send + Sync {
    fn name(&self) -> &str;

    /// Computes the phase from what the store holds. It must give the same
    /// output for the same stored data, so running it again is harmless.
    async fn run(&self, ctx: &Context, input: PhaseInput<'_>) -> Result<PhaseOutput, EngineError>;
}

/// Reads every stored document of a source, a page at a time, in id order.
/// The cursor is the last id of the previous page, so a resumed phase reads on
/// from its committed position.
pub struct StoredDocuments {
    store: Arc<dyn Store>,
    source: String,
    page_size: usize,
}

impl StoredDocuments {
    pub fn new(store: Arc<dyn Store>, source: impl Into<String>, page_size: usize) -> Self {
        Self { store, source: source.into(), page_size: page_size.max(1) }
    }
}

#[async_trait]
impl Source for StoredDocuments {
    fn name(&self) -> &str {
        &self.source
    }

    async fn fetch(&self, _ctx: &Context, _partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let docs = self.store.scan_documents(&self.source, cursor, self.page_size).await.map_err(|e| match e {
            StoreError::Unavailable(_) => SourceError::retryable(format!("reading stored documents: {e}")),
            _ => SourceError::fatal(format!("reading stored documents: {e}")),
        })?;
        let next = next_after(&docs, self.page_size);
        let items = docs.into_iter().map(|d| SourceItem::Document(Box::new(d))).collect();
        Ok(Page { items, next, dropped: 0 })
    }
}
