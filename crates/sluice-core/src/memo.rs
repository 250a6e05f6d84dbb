//! Write-ahead of paid results: a stage hands each result to the run's
//! writer the moment its paid answer arrives, and the writer stores it, with
//! the cost ledger, in a small transaction of its own, off the batch path.
//! A crash then re-pays only the calls that were still unanswered; the batch
//! commit keeps owning documents and the checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    stored: Arc<Stored>,
}

/// Results the writer has stored, by `(source, id, stage)`, until their
/// batch is committed: the commit leaves out the ones stored as they are,
/// instead of writing the same rows a second time.
#[derive(Debug, Default)]
pub(crate) struct Stored(Mutex<HashMap<(String, String, String), MemoEntry>>);

/// Most results kept in [`Stored`]; past it, it starts over (costing only
/// rows written twice). Results whose batch never comes (a stop drops the
/// batches being formed) would otherwise pile up.
const MAX_STORED: usize = 100_000;

impl Stored {
    /// Notes results as durably stored.
    pub(crate) fn extend(&self, entries: Vec<MemoEntry>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() + entries.len() > MAX_STORED {
            map.clear();
        }
        for entry in entries {
            map.insert((entry.source.clone(), entry.id.clone(), entry.stage.clone()), entry);
        }
    }

    /// The results of `memos` not stored already exactly as they are.
    fn not_stored(&self, memos: Vec<MemoEntry>) -> Vec<MemoEntry> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return memos;
        }
        memos
            .into_iter()
            .filter(|m| map.remove(&(m.source.clone(), m.id.clone(), m.stage.clone())).as_ref() != Some(m))
            .collect()
    }
}

impl WriteAhead {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Ahead>, stored: Arc<Stored>) -> Self {
        Self { tx: Some(tx), stored }
    }

    /// Of a batch's results, those its commit still has to write: the
    /// writer stored the others already, the same.
    pub(crate) fn not_stored(&self, memos: Vec<MemoEntry>) -> Vec<MemoEntry> {
        self.stored.not_stored(memos)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, value: i64) -> MemoEntry {
        MemoEntry {
            source: "s".into(),
            id: id.into(),
            stage: "classify".into(),
            fingerprint: "f".into(),
            content_hash: "h".into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_commit_leaves_out_only_results_stored_ahead_exactly_as_they_are() {
        let stored = Stored::default();
        stored.extend(vec![entry("a", 1), entry("b", 1)]);
        let left = stored.not_stored(vec![entry("a", 1), entry("b", 2), entry("c", 1)]);
        assert_eq!(left, vec![entry("b", 2), entry("c", 1)], "b changed since, c was never stored");
        assert_eq!(stored.not_stored(vec![entry("a", 1)]), vec![entry("a", 1)], "taken once: a later batch writes it");
    }
}
