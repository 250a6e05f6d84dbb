//! The `Sink` role: a secondary output (files, object storage, a queue)
//! that receives each batch just before the store commits it.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::store::{CommitBatch, RunId};

/// Written before each commit, inside the same retry: a batch is reported
/// stored only once every sink has it, and a failed write fails the commit,
/// so the checkpoint does not move. A resume or a retried commit writes the
/// same batch again, so a write must be idempotent. `StoreError::Unavailable`
/// is retried like the store's own; any other error fails the run.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs and errors.
    fn name(&self) -> &str;

    /// Written before each commit, inside the same retry; must be idempotent.
    async fn write(&self, run: RunId, batch: &CommitBatch) -> Result<(), StoreError>;
}
