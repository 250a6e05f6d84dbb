//! Streaming execution: fetcher, batcher, every stage and the committer run
//! as concurrent tasks joined by bounded channels. A slow stage or store fills
//! its input channel and so slows everything before it (backpressure); memory
//! is bounded by the batches in flight, never by the source's size.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::batcher::batch_pages;
use super::commit::{COMMIT_QUEUE, Groups, commit_groups};
use super::fetch::fetch_all;
use super::stages::stage_task;
use super::state::Shared;
use crate::checkpoint::Checkpoint;

pub(crate) async fn run(shared: Arc<Shared>, checkpoint: Checkpoint, partitions: Vec<String>) -> Checkpoint {
    let (page_tx, page_rx) = mpsc::channel(1);
    let (batch_tx, mut rx) = mpsc::channel(1);
    let mut tasks = vec![
        tokio::spawn(fetch_all(shared.clone(), checkpoint.partitions.clone(), partitions, page_tx)),
        tokio::spawn(batch_pages(shared.clone(), page_rx, batch_tx, checkpoint.batches + 1)),
    ];
    let stages = shared.stages.len();
    for index in 0..stages {
        // The last channel lets batches queue for the committer, which commits them together.
        let (tx, next_rx) = mpsc::channel(if index + 1 == stages { COMMIT_QUEUE } else { 1 });
        tasks.push(tokio::spawn(stage_task(shared.clone(), index, rx, tx)));
        rx = next_rx;
    }
    let checkpoint = commit_groups(&shared, Groups::Arriving(rx), checkpoint).await;
    for task in tasks {
        let _ = task.await;
    }
    checkpoint
}
