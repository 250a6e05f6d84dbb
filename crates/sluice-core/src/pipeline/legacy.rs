//! Batch (legacy) execution: fetch everything, then run each stage over
//! everything, then store. Kept to compare with streaming and to show that
//! both store the same data. Memory grows with the source.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::batcher::{Batch, batch_pages};
use super::commit::{Groups, commit_groups};
use super::fetch::fetch_all;
use super::panics::{join_message, spawn_task};
use super::stages::process_batch;
use super::state::Shared;
use crate::checkpoint::Checkpoint;
use crate::error::EngineError;

pub(crate) async fn run(shared: Arc<Shared>, checkpoint: Checkpoint, partitions: Vec<String>) -> Checkpoint {
    let (page_tx, page_rx) = mpsc::channel(1);
    let (batch_tx, mut batch_rx) = mpsc::channel(1);
    let fetcher = spawn_task(
        shared.clone(),
        "the fetcher".into(),
        fetch_all(shared.clone(), checkpoint.partitions.clone(), partitions, page_tx),
    );
    let batcher = spawn_task(
        shared.clone(),
        "the batcher".into(),
        batch_pages(shared.clone(), page_rx, batch_tx, checkpoint.batches + 1),
    );
    let mut batches = Vec::new();
    while let Some(mut batch) = batch_rx.recv().await {
        // The batch runbook counts what the source dropped as fetched, then filtered.
        batch.delta.fetched += batch.dropped;
        batch.delta.filtered += batch.dropped;
        shared.progress.fetched(batch.dropped);
        batches.push(batch);
    }
    let _ = fetcher.await;
    let _ = batcher.await;
    if interrupted(&shared) {
        return checkpoint;
    }
    let records: usize = batches.iter().map(|b| b.docs.len()).sum();
    tracing::info!(
        "Fetched {records} {}; running {} stages over all of them",
        shared.settings.labels.noun,
        shared.stages.len()
    );

    for index in 0..shared.stages.len() {
        batches = match run_stage_over_all(&shared, index, batches).await {
            Ok(batches) => batches,
            Err(error) => {
                shared.fail(error);
                return checkpoint;
            }
        };
        if interrupted(&shared) {
            return checkpoint;
        }
    }

    commit_groups(&shared, Groups::AtHand(batches.into_iter()), checkpoint).await
}

fn interrupted(shared: &Shared) -> bool {
    shared.ctx.stop.is_cancelled() || shared.abort.is_cancelled()
}

async fn run_stage_over_all(
    shared: &Arc<Shared>,
    index: usize,
    batches: Vec<Batch>,
) -> Result<Vec<Batch>, EngineError> {
    let spec = shared.stages[index].clone();
    let results: Vec<_> = futures::stream::iter(batches)
        .map(|batch| {
            let shared = shared.clone();
            let spec = spec.clone();
            tokio::spawn(async move { process_batch(&shared, &spec, index == 0, batch).await })
        })
        .buffered(spec.workers.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .map(|joined| {
            joined.map_err(|e| EngineError::Panicked {
                task: format!("stage {}", spec.stage.name()),
                message: join_message(e),
            })?
        })
        .collect()
}
