//! The run's write-ahead writer: one task that takes the results stages
//! hand over (see [`crate::memo`]) and stores them, with the cost ledger,
//! a group at a time: what arrives within [`WINDOW`] of the first, up to
//! [`MAX_ROWS`], goes in one short transaction. A paid call that brings no
//! result (an unusable answer) still wakes it, so the ledger is stored too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::context::UsageMeter;
use crate::memo::{Ahead, Stored, WriteAhead};
use crate::store::{MemoEntry, RunId, Store};

/// How long the writer waits for more results after the first of a group.
/// Short: a crash loses at most what is waiting, and SQLite's one writer
/// is held only for the group's transaction.
pub(crate) const WINDOW: Duration = Duration::from_millis(5);
/// Most results in one transaction.
pub(crate) const MAX_ROWS: usize = 256;

/// Whether runs write ahead: yes, unless `SLUICE_WRITE_AHEAD=off` (or `0`),
/// which exists to measure what the write-ahead costs.
pub(crate) fn enabled_by_env() -> bool {
    !matches!(std::env::var("SLUICE_WRITE_AHEAD").as_deref(), Ok("off" | "0" | "false"))
}

/// Starts the writer of `run`; it ends when every handle is dropped, after
/// storing what it still holds.
pub(crate) fn start(store: Arc<dyn Store>, run: RunId, usage: Arc<UsageMeter>) -> WriteAhead {
    let (tx, rx) = mpsc::unbounded_channel();
    let stored = Arc::new(Stored::default());
    tokio::spawn(writer(store, run, usage, rx, stored.clone()));
    WriteAhead::new(tx, stored)
}

async fn writer(
    store: Arc<dyn Store>,
    run: RunId,
    usage: Arc<UsageMeter>,
    mut rx: mpsc::UnboundedReceiver<Ahead>,
    stored_results: Arc<Stored>,
) {
    let mut stored = usage.snapshot();
    let mut open = true;
    while open {
        let mut group = Group::default();
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => group.take(item),
                None => open = false,
            },
            () = usage.changed() => {}
        }
        let deadline = Instant::now() + WINDOW;
        while open && !group.is_full() {
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => group.take(item),
                    None => open = false,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Taken after the results were handed over, so it counts their calls.
        let cost = usage.snapshot();
        if !group.entries.is_empty() || cost != stored {
            match store.write_ahead(run, &group.entries, &cost).await {
                Ok(()) => {
                    stored = cost;
                    // Their batch commit need not write them again.
                    stored_results.extend(std::mem::take(&mut group.entries));
                }
                // Only the saving is lost: the batch commit stores these results and the ledger too.
                Err(error) => tracing::warn!(%error, results = group.entries.len(), "could not store results ahead"),
            }
        }
        for done in group.flushes {
            let _ = done.send(());
        }
    }
}

/// What one transaction of the writer stores, and who waits for it.
#[derive(Default)]
struct Group {
    entries: Vec<MemoEntry>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Group {
    fn take(&mut self, item: Ahead) {
        match item {
            Ahead::Entry(entry) => self.entries.push(entry),
            Ahead::Flush(done) => self.flushes.push(done),
        }
    }

    /// Full, or someone waits for it: store it now.
    fn is_full(&self) -> bool {
        self.entries.len() >= MAX_ROWS || !self.flushes.is_empty()
    }
}
