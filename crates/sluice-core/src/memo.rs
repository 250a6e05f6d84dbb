//! Write-ahead of paid results: a stage hands each result to the run's
//! writer the moment its paid answer arrives, and the writer stores it, with
//! the cost ledger, in a small transaction of its own, off the batch path.
//! A crash then re-pays only the calls that were still unanswered; the batch
//! commit keeps owning documents and the checkpoint.

use tokio::sync::{mpsc, oneshot};

use crate::store::MemoEntry;

/// What the writer is handed.
#[derive(Debug)]
pub(crate) enum Ahead {
    /// A result to store.
    Entry(MemoEntry),
    /// Answer once everything handed over before is stored.
    Flush(oneshot::Sender<()>),
}

/// A run's write-ahead, as stages see it (in [`Context`](crate::Context)).
/// Cheap to clone; the default one (outside a run, or switched off) stores
/// nothing and the batch commit alone keeps the results.
#[derive(Clone, Debug, Default)]
pub struct WriteAhead {
    tx: Option<mpsc::UnboundedSender<Ahead>>,
}

impl WriteAhead {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Ahead>) -> Self {
        Self { tx: Some(tx) }
    }

    /// Whether results handed over are stored ahead of their batch.
    pub fn is_enabled(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Hands a result over; never waits (the writer takes what comes).
    pub fn remember(&self, entry: MemoEntry) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Ahead::Entry(entry));
        }
    }

    /// Waits until every result handed over so far is stored (or its writer is gone).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Ahead::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}
