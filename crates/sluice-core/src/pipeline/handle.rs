//! The handle a caller holds on a run: its event stream, a stop switch and
//! the final summary.

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, Counts};
use crate::event::Event;
use crate::store::{RunId, RunStatus};

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub status: RunStatus,
    pub counts: Counts,
    pub checkpoint: Checkpoint,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// A run going on in the background.
pub struct RunHandle {
    pub run_id: RunId,
    pub resumed: bool,
    events: mpsc::Receiver<Event>,
    stop: CancellationToken,
    task: JoinHandle<RunSummary>,
}

impl RunHandle {
    pub(crate) fn new(
        run_id: RunId,
        resumed: bool,
        events: mpsc::Receiver<Event>,
        stop: CancellationToken,
        task: JoinHandle<RunSummary>,
    ) -> Self {
        Self { run_id, resumed, events, stop, task }
    }

    /// A token that asks the run to stop at the next batch boundary when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The next event, or `None` once the run has finished and all were read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Waits for the end of the run, discarding events not read yet.
    pub async fn wait(mut self) -> RunSummary {
        while self.events.recv().await.is_some() {}
        match self.task.await {
            Ok(summary) => summary,
            // A bug, not a state of the run: report it as failed; the store keeps the last checkpoint.
            Err(e) => RunSummary {
                run_id: self.run_id,
                status: RunStatus::Failed,
                counts: Counts::default(),
                checkpoint: Checkpoint::default(),
                error: Some(format!("internal error: the run task ended abnormally: {e}")),
                duration_seconds: 0.0,
            },
        }
    }

    /// The events as a stream. Dropping the stream asks the run to stop.
    pub fn into_stream(self) -> impl Stream<Item = Event> + Send + 'static + use<> {
        let guard = self.stop.clone().drop_guard();
        futures::stream::unfold((self.events, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|event| (event, (rx, guard)))
        })
    }
}
