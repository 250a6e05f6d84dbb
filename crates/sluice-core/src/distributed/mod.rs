//! Engine side of distributed runs: a worker runs the ordinary engine over
//! one claimed partition of a source, with a store that fences its commits
//! (see the PostgreSQL store's `distributed` module).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::SourceError;
use crate::source::{Page, Source};

/// A source seen through one of its partitions: the engine of a worker
/// reads only the partition it claimed.
pub struct OnePartition {
    inner: Arc<dyn Source>,
    partition: String,
}

impl OnePartition {
    pub fn new(inner: Arc<dyn Source>, partition: impl Into<String>) -> Self {
        Self { inner, partition: partition.into() }
    }
}

#[async_trait]
impl Source for OnePartition {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(vec![self.partition.clone()])
    }

    async fn fetch(&self, ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        if partition != self.partition {
            return Err(SourceError::fatal(format!(
                "partition {partition:?} asked of a worker that claimed {:?}",
                self.partition
            )));
        }
        self.inner.fetch(ctx, partition, cursor).await
    }

    /// Unknown for one partition; the run's total is the whole source's.
    async fn estimated_total(&self) -> Option<u64> {
        None
    }

    fn batch_linger(&self) -> Option<Duration> {
        self.inner.batch_linger()
    }
}
