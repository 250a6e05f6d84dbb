//! The handle a caller holds on a run: its event stream, a stop switch and
//! the final summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// How many batches were formed and not committed yet: what a stop waits for.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    pub fn batches(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn formed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, batches: u64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(batches)));
    }
}

/// A run going on in the background.
pub struct RunHandle {
    pub run_id: RunId,
    pub resumed: bool,
    events: mpsc::Receiver<Event>,
    stop: CancellationToken,
    in_flight: InFlight,
    task: JoinHandle<RunSummary>,
}

impl RunHandle {
    pub(crate) fn new(
        run_id: RunId,
        resumed: bool,
        events: mpsc::Receiver<Event>,
        stop: CancellationToken,
        in_flight: InFlight,
        task: JoinHandle<RunSummary>,
    ) -> Self {
        Self { run_id, resumed, events, stop, in_flight, task }
    }

    /// The run's count of batches in flight, to say what a stop waits for.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
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
