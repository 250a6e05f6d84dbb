//! Streaming execution: fetcher, batcher, every stage and the committer run
//! as concurrent tasks joined by bounded channels. A slow stage or store fills
//! its input channel and so slows everything before it (backpressure); memory
//! is bounded by the batches in flight, never by the source's size.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::batcher::batch_pages;
use super::commit::{COMMIT_QUEUE, Groups, commit_groups};
use super::fetch::fetch_all;
use super::panics::spawn_task;
use super::stages::stage_task;
use super::state::Shared;
use crate::checkpoint::Checkpoint;

pub(crate) async fn run(shared: Arc<Shared>, checkpoint: Checkpoint, partitions: Vec<String>) -> Checkpoint {
    let (page_tx, page_rx) = mpsc::channel(1);
    let (batch_tx, mut rx) = mpsc::channel(1);
    let mut tasks = vec![
        spawn_task(
            shared.clone(),
            "the fetcher".into(),
            fetch_all(shared.clone(), checkpoint.partitions.clone(), partitions, page_tx),
        ),
        spawn_task(
            shared.clone(),
            "the batcher".into(),
            batch_pages(shared.clone(), page_rx, batch_tx, checkpoint.batches + 1),
        ),
    ];
    let stages = shared.stages.len();
    for index in 0..stages {
        // The last channel lets batches queue for the committer, which commits them together.
        let (tx, next_rx) = mpsc::channel(if index + 1 == stages { COMMIT_QUEUE } else { 1 });
        let task = format!("stage {}", shared.stages[index].stage.name());
        tasks.push(spawn_task(shared.clone(), task, stage_task(shared.clone(), index, rx, tx)));
        rx = next_rx;
    }
    let checkpoint = commit_groups(&shared, Groups::Arriving(rx), checkpoint).await;
    for task in tasks {
        // A panic was caught in the task and failed the run; nothing else can end it early.
        let _ = task.await;
    }
    checkpoint
}
