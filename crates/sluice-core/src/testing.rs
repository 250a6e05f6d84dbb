//! Fakes of the engine's roles for tests, behind the `testing` feature: an
//! in-memory [`MemStore`] and a scripted [`VecSource`], both with faults to
//! inject. A library user tests a stage or a whole pipeline with them:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use sluice_core::testing::{MemStore, VecSource};
//! use sluice_core::{Pipeline, RunStatus, Start};
//!
//! let store = Arc::new(MemStore::default());
//! let summary = Pipeline::new(Arc::new(VecSource::new(25, 1, 10)), store.clone()).run(Start::New).await.unwrap();
//! assert_eq!(summary.status, RunStatus::Completed);
//! assert_eq!(store.doc_ids().len(), 25);
//! # });
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::checkpoint::{Checkpoint, CostLedger};
use crate::context::Context;
use crate::error::{SourceError, StoreError};
use crate::record::{Document, Record};
use crate::source::{Page, Source, SourceItem};
use crate::store::{
    ActiveRunGuard, CommitBatch, FailureRow, MemoEntry, MemoKey, NewRun, PhaseResult, RunId, RunInfo, RunStatus, Store,
};

/// What a [`MemStore`] holds; open to tests, which may read and edit it.
#[derive(Default)]
pub struct MemState {
    pub runs: Vec<RunInfo>,
    /// Each stored document with the number of times it was written.
    pub docs: BTreeMap<(String, String), (Document, u32)>,
    /// The pipeline fingerprint each stored document was written under.
    pub fingerprints: BTreeMap<(String, String), Option<String>>,
    pub failures: Vec<FailureRow>,
    pub memos: BTreeMap<(String, String, String), MemoEntry>,
    pub results: BTreeMap<(RunId, String, String), PhaseResult>,
    /// Commits that succeeded.
    pub commits: u64,
    /// Calls of [`Store::unchanged`].
    pub unchanged_lookups: u64,
}

/// A [`Store`] in memory: runs, documents, failures, memos and phase
/// results, with the run slot and the one-transaction commit of the real
/// stores, plus faults to inject.
#[derive(Default)]
pub struct MemStore {
    pub state: Mutex<MemState>,
    /// Set while a run holds the store's run slot.
    pub active: Arc<AtomicBool>,
    /// The next N commits fail as unavailable.
    pub unavailable: AtomicU32,
    /// When set, every commit waits for a permit.
    pub gate: Option<Arc<Semaphore>>,
    /// Keep only runs and checkpoints, not what is committed (for
    /// benchmarks: the engine's own cost, without storage).
    pub discard: bool,
}

struct Guard(Arc<AtomicBool>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl MemStore {
    /// A store that keeps runs and checkpoints only (see [`MemStore::discard`]).
    pub fn discarding() -> Self {
        Self { discard: true, ..Self::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of the stored documents, in order.
    pub fn doc_ids(&self) -> Vec<String> {
        self.state().docs.keys().map(|(_, id)| id.clone()).collect()
    }
    /// The most times any document was written.
    pub fn max_write_count(&self) -> u32 {
        self.state().docs.values().map(|(_, n)| *n).max().unwrap_or(0)
    }
    /// The stored documents, in `(source, id)` order.
    pub fn docs(&self) -> Vec<Document> {
        self.state().docs.values().map(|(d, _)| d.clone()).collect()
    }
}

#[async_trait]
impl Store for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError> {
        if self.active.swap(true, Ordering::SeqCst) {
            let id = self.state().runs.iter().rev().find(|r| r.status.is_active()).map_or(0, |r| r.id);
            return Err(StoreError::Busy { active_run_id: id });
        }
        Ok(Box::new(Guard(self.active.clone())))
    }
    async fn create_run(&self, new: &NewRun) -> Result<RunInfo, StoreError> {
        let mut s = self.state();
        let run = RunInfo {
            id: s.runs.len() as i64 + 1,
            pipeline: new.pipeline.clone(),
            status: RunStatus::Running,
            phase: new.phase.clone(),
            checkpoint: None,
            config: new.config.clone(),
            date_from: new.window.as_ref().map(|w| w.from.clone()),
            date_to: new.window.as_ref().map(|w| w.to.clone()),
            started_at: "t".into(),
            updated_at: "t".into(),
            finished_at: None,
            error: None,
        };
        s.runs.push(run.clone());
        Ok(run)
    }
    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        Ok(self.state().runs.iter().find(|r| r.id == id).cloned())
    }
    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        Ok(self.state().runs.iter().rev().take(limit).cloned().collect())
    }
    async fn set_status(&self, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError> {
        let mut s = self.state();
        let run = s.runs.iter_mut().find(|r| r.id == id).ok_or(StoreError::NotFound(id.to_string()))?;
        run.status = status;
        run.error = error.map(str::to_string);
        Ok(())
    }
    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        if let Some(gate) = &self.gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        if self.unavailable.load(Ordering::SeqCst) > 0 {
            self.unavailable.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected".into()));
        }
        let mut s = self.state();
        if self.discard {
            s.commits += 1;
            let run = s.runs.iter_mut().find(|r| r.id == run).ok_or(StoreError::NotFound(run.to_string()))?;
            run.checkpoint = Some(checkpoint.clone());
            return Ok(());
        }
        for doc in &batch.documents {
            let key = (doc.source().to_string(), doc.id().to_string());
            let writes = s.docs.get(&key).map_or(0, |(_, n)| *n);
            s.fingerprints.insert(key.clone(), batch.fingerprint.clone());
            s.docs.insert(key, (doc.clone(), writes + 1));
        }
        for update in &batch.updates {
            let key = (update.source.clone(), update.id.clone());
            let (doc, _) = s.docs.get_mut(&key).ok_or(StoreError::NotFound(update.id.clone()))?;
            doc.annotations = update.annotations.clone();
            if update.embedding.is_some() {
                doc.embedding = update.embedding.clone();
            }
        }
        for result in &batch.results {
            s.results.insert((run, result.kind.clone(), result.key.clone()), result.clone());
        }
        for failure in &batch.failures {
            let id = s.failures.len() as i64 + 1;
            s.failures.push(FailureRow {
                id,
                run_id: run,
                failure: failure.clone(),
                created_at: "t".into(),
                resolved_by: None,
            });
        }
        for memo in &batch.memos {
            s.memos.insert((memo.source.clone(), memo.id.clone(), memo.stage.clone()), memo.clone());
        }
        s.commits += 1;
        let run = s.runs.iter_mut().find(|r| r.id == run).ok_or(StoreError::NotFound(run.to_string()))?;
        let stored = run.checkpoint.as_ref().map(|c| c.cost).unwrap_or_default();
        run.checkpoint = Some(Checkpoint { cost: checkpoint.cost.max(&stored), ..checkpoint.clone() });
        Ok(())
    }
    async fn write_ahead(&self, run: RunId, memos: &[MemoEntry], cost: &CostLedger) -> Result<(), StoreError> {
        let mut s = self.state();
        for memo in memos {
            s.memos.insert((memo.source.clone(), memo.id.clone(), memo.stage.clone()), memo.clone());
        }
        let run = s.runs.iter_mut().find(|r| r.id == run).ok_or(StoreError::NotFound(run.to_string()))?;
        // Before the first commit: an empty checkpoint that holds the ledger.
        let phase = run.phase.clone();
        let checkpoint = run.checkpoint.get_or_insert_with(|| Checkpoint::new(phase));
        checkpoint.cost = checkpoint.cost.max(cost);
        Ok(())
    }
    async fn memo_lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        keys: &[MemoKey],
    ) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
        let s = self.state();
        Ok(keys
            .iter()
            .map(|k| {
                s.memos
                    .get(&(k.source.clone(), k.id.clone(), stage.to_string()))
                    .filter(|m| m.fingerprint == fingerprint && m.content_hash == k.content_hash)
                    .map(|m| m.value.clone())
            })
            .collect())
    }
    async fn holds_documents(&self) -> Result<bool, StoreError> {
        Ok(!self.state().docs.is_empty())
    }
    async fn unchanged(&self, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
        let mut s = self.state();
        s.unchanged_lookups += 1;
        Ok(keys
            .iter()
            .map(|k| {
                let key = (k.source.clone(), k.id.clone());
                s.docs.get(&key).is_some_and(|(doc, _)| doc.content_hash == k.content_hash)
                    && s.fingerprints.get(&key).is_some_and(|f| f.as_deref() == Some(fingerprint))
            })
            .collect())
    }
    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        let s = self.state();
        Ok(s.docs
            .iter()
            .filter(|((src, id), _)| src == source && after.is_none_or(|a| id.as_str() > a))
            .take(limit)
            .map(|(_, (doc, _))| Document { chunks: Vec::new(), ..doc.clone() })
            .collect())
    }
    async fn count_documents(&self, source: &str) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.state().docs.keys().filter(|(src, _)| src == source).count() as u64))
    }
    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        let s = self.state();
        Ok(s.results.iter().filter(|((r, k, _), _)| *r == run && k == kind).map(|(_, v)| v.clone()).collect())
    }
    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
        Ok(self.state().failures.iter().filter(|f| f.run_id == run).cloned().collect())
    }
    async fn resolve_failures(&self, _run: RunId, _retry_run: RunId) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// A [`Source`] over items in memory, in partitions `p0`, `p1`..., a page
/// at a time (the cursor is the index of the page's first item), with
/// faults to inject.
pub struct VecSource {
    /// Items per partition.
    pub partitions: Vec<Vec<SourceItem>>,
    pub page_size: usize,
    /// Pages answered so far.
    pub pages_fetched: AtomicU64,
    /// Refuse any non-empty cursor this many times.
    pub refuse_cursors: AtomicU32,
    /// Fail this many fetches as retryable.
    pub transient_errors: AtomicU32,
    /// Records for which this is true are dropped at page level and
    /// counted in `Page::dropped` (like a source's quality filter).
    pub drop_if: Option<fn(&Record) -> bool>,
}

impl VecSource {
    /// `n` records `r00000`, `r00001`... dealt round-robin into `partitions`,
    /// served `page_size` at a time.
    pub fn new(n: usize, partitions: usize, page_size: usize) -> Self {
        let parts = (0..partitions)
            .map(|p| {
                (0..n)
                    .filter(|i| i % partitions == p)
                    .map(|i| {
                        SourceItem::Record(Record::new("vec", format!("r{i:05}"), format!("record number {i} text")))
                    })
                    .collect()
            })
            .collect();
        Self {
            partitions: parts,
            page_size,
            pages_fetched: AtomicU64::new(0),
            refuse_cursors: AtomicU32::new(0),
            transient_errors: AtomicU32::new(0),
            drop_if: None,
        }
    }
}

#[async_trait]
impl Source for VecSource {
    fn name(&self) -> &str {
        "vec"
    }
    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok((0..self.partitions.len()).map(|p| format!("p{p}")).collect())
    }
    async fn fetch(&self, _ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        if self.transient_errors.load(Ordering::SeqCst) > 0 {
            self.transient_errors.fetch_sub(1, Ordering::SeqCst);
            return Err(SourceError::retryable("503 from the fake"));
        }
        if cursor.is_some() && self.refuse_cursors.load(Ordering::SeqCst) > 0 {
            self.refuse_cursors.fetch_sub(1, Ordering::SeqCst);
            return Err(SourceError::CursorInvalid { message: "expired".into() });
        }
        self.pages_fetched.fetch_add(1, Ordering::SeqCst);
        let items = partition
            .strip_prefix('p')
            .and_then(|p| p.parse::<usize>().ok())
            .and_then(|p| self.partitions.get(p))
            .ok_or_else(|| SourceError::fatal(format!("no partition {partition:?}")))?;
        let start: usize = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| SourceError::CursorInvalid { message: format!("not a cursor: {c:?}") })?,
        };
        let start = start.min(items.len());
        let end = (start + self.page_size.max(1)).min(items.len());
        let mut page: Vec<SourceItem> = items[start..end].to_vec();
        let before = page.len();
        if let Some(drop_if) = self.drop_if {
            page.retain(|item| !matches!(item, SourceItem::Record(r) if drop_if(r)));
        }
        let dropped = (before - page.len()) as u64;
        Ok(Page { items: page, next: (end < items.len()).then(|| end.to_string()), dropped })
    }
}
