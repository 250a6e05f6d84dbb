//! A panic in one of the run's tasks (a stage, the fetcher, the batcher or
//! the committer) fails the run with the panic's message instead of ending
//! its channel quietly, which would read as "done" downstream.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::task::JoinHandle;

use super::state::Shared;
use crate::error::EngineError;

/// The text a panic was raised with.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The panic message of a task that panicked, or why it ended otherwise.
pub(crate) fn join_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => panic_message(payload.as_ref()),
        Err(error) => error.to_string(),
    }
}

/// Runs `future`; a panic in it becomes `Err` with the panic's message.
pub(crate) async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| panic_message(payload.as_ref()))
}

/// Spawns one of the run's tasks; if it panics the run fails at once (the
/// abort switch stops the other tasks) with the panic's message.
pub(crate) fn spawn_task<F>(shared: Arc<Shared>, task: String, future: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(message) = catch_panic(future).await {
            shared.fail(EngineError::Panicked { task, message });
        }
    })
}
