//! The store a worker's engine runs one partition against: the PostgreSQL
//! store, except that commits are fenced by the claim, the run row is
//! never touched (its checkpoint is derived from the partitions), and the
//! run looks, to the engine, like a run of this one partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use sluice_core::store::{
    ActiveRunGuard, CommitBatch, FailureRow, MemoEntry, MemoKey, NewRun, PhaseResult, RunId, RunInfo, RunStatus, Store,
};
use sluice_core::{Checkpoint, CostLedger, Document, StoreError};

use super::super::PostgresStore;
use super::super::commit::{Uncertain, commit, salvage_memos, write_ahead};
use super::super::runs::read_run;
use super::fence::{Fence, LEASE_LOST};
use super::lease::Claim;

/// A [`Store`] for the engine of one claimed partition.
pub struct PartitionStore {
    store: PostgresStore,
    fence: Fence,
    /// Where the partition stood when claimed; what `get_run` answers.
    checkpoint: Checkpoint,
    uncertain: Uncertain,
    lease_lost: Arc<AtomicBool>,
}

impl PartitionStore {
    pub fn new(store: PostgresStore, claim: &Claim) -> Self {
        Self {
            store,
            fence: claim.fence.clone(),
            checkpoint: claim.checkpoint.clone(),
            uncertain: Uncertain::default(),
            lease_lost: Arc::default(),
        }
    }

    /// Set once the fence refused a commit: this worker no longer owns the partition.
    pub fn lease_lost(&self) -> Arc<AtomicBool> {
        self.lease_lost.clone()
    }

    async fn run_info(&self, id: RunId) -> Result<RunInfo, StoreError> {
        self.store.ready().await?;
        read_run(self.store.db(), id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
    }
}

#[async_trait]
impl Store for PartitionStore {
    fn describe(&self) -> String {
        self.store.describe()
    }

    /// No run slot: the partition's lease is what makes this process its only writer.
    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError> {
        Ok(Box::new(()))
    }

    /// The run exists already: a partition's first start is a "new" run of it.
    async fn create_run(&self, _new: &NewRun) -> Result<RunInfo, StoreError> {
        self.run_info(self.fence.run).await
    }

    /// The run as the engine resumes it: this partition's checkpoint.
    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        let mut run = self.run_info(id).await?;
        if id == self.fence.run {
            run.status = RunStatus::Stopped;
            run.checkpoint = Some(self.checkpoint.clone());
        }
        Ok(Some(run))
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        self.store.list_runs(limit).await
    }

    /// The run's status belongs to all its workers; the worker settles it
    /// from the partitions once this partition's engine ends.
    async fn set_status(&self, _id: RunId, _status: RunStatus, _error: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        if run != self.fence.run {
            return Err(StoreError::Contract {
                message: format!("a commit to run {run} from the worker of {}", self.fence.describe()),
            });
        }
        test_delay().await;
        let setup = self.store.ready().await?;
        let result = commit(self.store.db(), setup, &self.uncertain, run, batch, checkpoint, Some(&self.fence)).await;
        if let Err(StoreError::Contract { message }) = &result
            && message.starts_with(LEASE_LOST)
        {
            self.lease_lost.store(true, Ordering::SeqCst);
            tracing::warn!(
                run_id = run,
                partition = %self.fence.partition,
                epoch = self.fence.epoch,
                "{message}: another worker owns it now; this batch was rolled back"
            );
            if let Err(e) = self.store.note_refused_commit(&self.fence.owner).await {
                tracing::warn!(error = %e, "could not count the refused commit");
            }
            match salvage_memos(self.store.db(), setup, batch).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(run_id = run, salvaged = n, "paid results of the refused batch kept as memos"),
                Err(e) => tracing::warn!(error = %e, "could not salvage the paid results of the refused batch"),
            }
        }
        result
    }

    /// Paid results the moment they are in, so a SIGKILL of this worker costs
    /// the partition's new owner at most the calls in flight, not the batches
    /// in flight; the ledger goes to the partition's checkpoint, under the fence.
    async fn write_ahead(&self, run: RunId, memos: &[MemoEntry], cost: &CostLedger) -> Result<(), StoreError> {
        self.store.ready().await?;
        write_ahead(self.store.db(), run, memos, cost, Some(&self.fence)).await
    }

    async fn memo_lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        keys: &[MemoKey],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        self.store.memo_lookup(stage, fingerprint, keys).await
    }

    async fn unchanged(&self, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
        self.store.unchanged(fingerprint, keys).await
    }

    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        self.store.scan_documents(source, after, limit).await
    }

    async fn count_documents(&self, source: &str) -> Result<Option<u64>, StoreError> {
        self.store.count_documents(source).await
    }

    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        self.store.phase_results(run, kind).await
    }

    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
        self.store.failures(run).await
    }

    async fn resolve_failures(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        self.store.resolve_failures(run, retry_run).await
    }
}

/// Debug builds only: `SLUICE_TEST_COMMIT_DELAY_MS` waits before each
/// fenced commit, so a test can freeze a worker (SIGSTOP) between batches,
/// outside any transaction, and see its late commit refused.
async fn test_delay() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("SLUICE_TEST_COMMIT_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
