//! Batch (legacy) execution: fetch everything, then run each stage over
//! everything, then store. Kept to compare with streaming and to show that
//! both store the same data. Memory grows with the source.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::commit::{COMMIT_QUEUE, commit_batches};
use super::fetch::{Batch, batch_pages, fetch_all};
use super::run::Shared;
use super::stages::process_batch;
use crate::checkpoint::Checkpoint;
use crate::error::{EngineError, StageError};

pub(crate) async fn run(shared: Arc<Shared>, checkpoint: Checkpoint, partitions: Vec<String>) -> Checkpoint {
    let (page_tx, page_rx) = mpsc::channel(1);
    let (batch_tx, mut batch_rx) = mpsc::channel(1);
    let fetcher = tokio::spawn(fetch_all(shared.clone(), checkpoint.partitions.clone(), partitions, page_tx));
    let batcher = tokio::spawn(batch_pages(shared.clone(), page_rx, batch_tx, checkpoint.batches + 1));
    let mut batches = Vec::new();
    while let Some(batch) = batch_rx.recv().await {
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

    let mut checkpoint = checkpoint;
    let mut batches = batches.into_iter().peekable();
    while batches.peek().is_some() {
        if interrupted(&shared) {
            break;
        }
        let group: Vec<Batch> = batches.by_ref().take(COMMIT_QUEUE + 1).collect();
        match commit_batches(&shared, group, &checkpoint).await {
            Ok(next) => checkpoint = next,
            Err(error) => {
                shared.fail(error);
                break;
            }
        }
    }
    checkpoint
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
            joined.map_err(|e| EngineError::Stage {
                stage: spec.stage.name().to_string(),
                error: StageError::permanent("panic", e.to_string()),
            })?
        })
        .collect()
}
