//! Cutting fetched pages into batches bounded by records and bytes, with the
//! position after each batch's last record, so a committed batch says exactly
//! where to resume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::state::Shared;
use crate::checkpoint::{Counts, Position};
use crate::event::EventKind;
use crate::record::Document;
use crate::source::SourceItem;
use crate::store::{Deletion, Failure, MemoEntry};

/// A fetched page, minus the records of it that were already committed.
pub(crate) struct PageMsg {
    pub partition: String,
    pub spot: PageSpot,
    pub items: Vec<SourceItem>,
    /// Records the source dropped from the page (`Page::dropped`), counted
    /// once: when the page is read from its top.
    pub dropped: u64,
}

/// Where a page stands in its partition.
pub(crate) struct PageSpot {
    pub cursor: Option<String>,
    pub next: Option<String>,
    /// Index in the page of the first item sent.
    pub first_index: usize,
    pub page_len: usize,
}

impl PageSpot {
    /// The partition's position once the item at `offset` (of those sent), whose id is `id`, is committed.
    fn position_after(&self, offset: usize, id: &str) -> Position {
        let index = self.first_index + offset;
        if index + 1 < self.page_len {
            return Position {
                cursor: self.cursor.clone(),
                skip: (index + 1) as u64,
                last_id: Some(id.to_string()),
                done: false,
            };
        }
        self.position_after_page()
    }

    fn position_after_page(&self) -> Position {
        match &self.next {
            Some(next) => Position { cursor: Some(next.clone()), skip: 0, last_id: None, done: false },
            None => Position { cursor: self.cursor.clone(), skip: self.page_len as u64, last_id: None, done: true },
        }
    }
}

/// A batch on its way from the batcher to the store.
pub(crate) struct Batch {
    pub seq: u64,
    pub docs: Vec<Document>,
    pub failures: Vec<Failure>,
    /// Stored documents the source found gone; they pass the stages by.
    pub deletions: Vec<Deletion>,
    /// Stage results to remember with this batch.
    pub memos: Vec<MemoEntry>,
    /// Position of each partition this batch moved, after its last record.
    pub positions: BTreeMap<String, Position>,
    /// What this batch adds to the run's counts (`stored` is added at commit).
    pub delta: Counts,
    /// Records the source dropped from the pages of this batch. Streaming
    /// leaves them uncounted; the legacy executor counts them as fetched
    /// and filtered (the batch runbook's counters).
    pub dropped: u64,
    pub formed_at: Instant,
}

/// Cuts pages into batches bounded by records and bytes. On a stop it drops
/// what it holds (re-fetched on resume) and says how much.
pub(crate) async fn batch_pages(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<PageMsg>,
    tx: mpsc::Sender<Batch>,
    first_seq: u64,
) {
    let settings = &shared.settings;
    let source_name = shared.source.name().to_string();
    let mut builder = BatchBuilder::new(first_seq);
    let linger = shared.source.batch_linger();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shared.ctx.stop.cancelled() => break,
            _ = shared.abort.cancelled() => return,
            msg = rx.recv() => msg,
            // A live source may go quiet for long: what it gave is committed now, not when a batch fills.
            _ = tokio::time::sleep(linger.unwrap_or_default()), if linger.is_some() && !builder.is_empty() => {
                let batch = builder.take(&shared, &settings.labels.noun);
                if tx.send(batch).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(msg) = msg else {
            // Every partition is read: the last batch carries the final positions.
            if !builder.is_empty() || !builder.positions.is_empty() {
                let batch = builder.take(&shared, &settings.labels.noun);
                let _ = tx.send(batch).await;
            }
            return;
        };
        let PageMsg { partition, spot, items, dropped } = msg;
        builder.dropped += dropped;
        if items.is_empty() {
            builder.positions.insert(partition.clone(), spot.position_after_page());
        }
        let last = items.len().saturating_sub(1);
        for (offset, item) in items.into_iter().enumerate() {
            if let SourceItem::Invalid { id, error_type, error, .. } = &item {
                tracing::warn!(source = source_name, id, %error, "invalid record");
                shared
                    .ctx
                    .events
                    .emit(EventKind::DocumentFailed {
                        doc_id: Some(id.clone()),
                        source: source_name.clone(),
                        stage: "source".into(),
                        error: error.clone(),
                        error_type: error_type.clone(),
                        retry_count: 0,
                        is_retryable: false,
                    })
                    .await;
            }
            // Positions are only needed where a batch ends or the page does.
            let bytes = item_bytes(&item);
            let fills = builder.len() + 1 >= settings.batch_size || builder.bytes + bytes >= settings.max_batch_bytes;
            if fills || offset == last {
                builder.positions.insert(partition.clone(), spot.position_after(offset, item.id()));
            }
            builder.push(&source_name, item, bytes);
            if fills {
                let batch = builder.take(&shared, &settings.labels.noun);
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }
    // Stopped: count what was fetched but is in no batch.
    let mut buffered = builder.docs.len() + builder.failures.len();
    while let Ok(msg) = rx.try_recv() {
        buffered += msg.items.len();
    }
    if buffered > 0 {
        tracing::warn!("Stopped during fetch with {buffered} buffered");
    }
}

fn item_bytes(item: &SourceItem) -> usize {
    match item {
        SourceItem::Record(record) => record.approx_bytes(),
        SourceItem::Document(doc) => doc.approx_bytes(),
        SourceItem::Invalid { raw, .. } => raw.len(),
        SourceItem::Unchanged { id } | SourceItem::Deleted { id, .. } => id.len(),
    }
}

struct BatchBuilder {
    next_seq: u64,
    docs: Vec<Document>,
    failures: Vec<Failure>,
    deletions: Vec<Deletion>,
    /// Items found as stored since the last batch.
    unchanged: u64,
    positions: BTreeMap<String, Position>,
    bytes: usize,
    dropped: u64,
}

impl BatchBuilder {
    fn new(next_seq: u64) -> Self {
        Self {
            next_seq,
            docs: Vec::new(),
            failures: Vec::new(),
            deletions: Vec::new(),
            unchanged: 0,
            positions: BTreeMap::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.docs.len() + self.failures.len() + self.deletions.len()
    }

    fn push(&mut self, source_name: &str, item: SourceItem, bytes: usize) {
        self.bytes += bytes;
        match item {
            SourceItem::Record(record) => self.docs.push(Document::from_record(record)),
            SourceItem::Document(doc) => self.docs.push(*doc),
            SourceItem::Unchanged { .. } => self.unchanged += 1,
            SourceItem::Deleted { id, action } => {
                self.deletions.push(Deletion { source: source_name.to_string(), id, action })
            }
            SourceItem::Invalid { id, raw, error_type, error } => {
                self.failures.push(Failure {
                    source: source_name.to_string(),
                    record_id: id,
                    stage: "source".into(),
                    error_type,
                    error,
                    retryable: false,
                    retry_count: 0,
                    payload: raw,
                    has_record: false,
                });
            }
        }
    }

    fn take(&mut self, shared: &Shared, noun: &str) -> Batch {
        let seq = self.next_seq;
        self.next_seq += 1;
        let docs = std::mem::take(&mut self.docs);
        let failures = std::mem::take(&mut self.failures);
        let deletions = std::mem::take(&mut self.deletions);
        let delta = Counts {
            fetched: (docs.len() + failures.len()) as u64,
            failed: failures.len() as u64,
            unchanged: std::mem::take(&mut self.unchanged),
            deleted: deletions.len() as u64,
            ..Counts::default()
        };
        tracing::info!("Processing batch {seq}: {} {noun}", docs.len() + failures.len());
        shared.progress.fetched(delta.fetched);
        shared.in_flight.formed();
        self.bytes = 0;
        Batch {
            seq,
            docs,
            failures,
            deletions,
            memos: Vec::new(),
            positions: std::mem::take(&mut self.positions),
            delta,
            dropped: std::mem::take(&mut self.dropped),
            formed_at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_after_last_record_points_at_next_page_or_done() {
        let mut spot = PageSpot { cursor: Some("c1".into()), next: Some("c2".into()), first_index: 1, page_len: 3 };
        assert_eq!(
            spot.position_after(0, "b"),
            Position { cursor: Some("c1".into()), skip: 2, last_id: Some("b".into()), done: false }
        );
        assert_eq!(
            spot.position_after(1, "c"),
            Position { cursor: Some("c2".into()), skip: 0, last_id: None, done: false }
        );
        spot.next = None;
        assert!(spot.position_after(1, "c").done);
    }
}
