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

    /// Whether it reads the stored documents one by one (so its work can be
    /// split by id range), rather than all of them at once.
    pub fn per_document(&self) -> bool {
        matches!(self, PhaseSpec::Documents { .. })
    }
}

/// The partition name under which a per-document phase's checkpoint keeps
/// its position in the stored documents (the cursor is the last id read).
pub const STORED_PARTITION: &str = "main";

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
    /// The last id to read (inclusive, byte order as the stores'): one id
    /// range of a phase split between workers. `None`: to the end.
    last: Option<String>,
}

impl StoredDocuments {
    pub fn new(store: Arc<dyn Store>, source: impl Into<String>, page_size: usize) -> Self {
        Self { store, source: source.into(), page_size: page_size.max(1), last: None }
    }

    /// Reads no document after `last` (with a start cursor, the range `(cursor, last]`).
    pub fn up_to(mut self, last: Option<String>) -> Self {
        self.last = last;
        self
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
        let mut next = next_after(&docs, self.page_size);
        let mut docs = docs;
        if let Some(last) = &self.last {
            // Ids compare as bytes, the stores' order (`COLLATE "C"`, SQLite's BINARY).
            docs.retain(|d| d.id() <= last.as_str());
            if docs.last().is_none_or(|d| d.id() == last.as_str()) || next.is_none() || docs.len() < self.page_size {
                next = None;
            }
        }
        let items = docs.into_iter().map(|d| SourceItem::Document(Box::new(d))).collect();
        Ok(Page { items, next, dropped: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    async fn read_all(source: &StoredDocuments, from: Option<&str>) -> Vec<String> {
        let ctx = Context::detached();
        let mut cursor = from.map(str::to_string);
        let mut ids = Vec::new();
        loop {
            let page = source.fetch(&ctx, "", cursor.as_deref()).await.expect("a page");
            ids.extend(page.items.iter().filter_map(|i| match i {
                SourceItem::Document(d) => Some(d.id().to_string()),
                _ => None,
            }));
            match page.next {
                Some(next) => cursor = Some(next),
                None => return ids,
            }
        }
    }

    #[tokio::test]
    async fn an_upper_bound_reads_its_id_range_only_and_ranges_cover_every_document_once() {
        let store = Arc::new(MemStore::default());
        {
            let mut state = store.state.lock().unwrap();
            for i in 0..23 {
                let id = format!("d{i:02}");
                state.docs.insert(
                    ("s".into(), id.clone()),
                    (Document::from_record(crate::record::Record::new("s", id, "text")), 1),
                );
            }
        }
        let store: Arc<dyn Store> = store;
        let range = |last: Option<&str>| StoredDocuments::new(store.clone(), "s", 5).up_to(last.map(str::to_string));
        assert_eq!(read_all(&range(Some("d04")), None).await, (0..5).map(|i| format!("d{i:02}")).collect::<Vec<_>>());
        // (d04, d14], (d14, end]: a page boundary on the bound, and a bound inside a page.
        let middle = read_all(&range(Some("d14")), Some("d04")).await;
        assert_eq!(middle, (5..15).map(|i| format!("d{i:02}")).collect::<Vec<_>>());
        let inside = read_all(&range(Some("d12")), Some("d04")).await;
        assert_eq!(inside, (5..13).map(|i| format!("d{i:02}")).collect::<Vec<_>>());
        let rest = read_all(&range(None), Some("d14")).await;
        assert_eq!(rest, (15..23).map(|i| format!("d{i:02}")).collect::<Vec<_>>());
        // A bound past every id reads to the end.
        assert_eq!(read_all(&range(Some("z")), Some("d20")).await, vec!["d21", "d22"]);
    }
}
