//! Fetching pages from every partition and cutting them into batches, with the
//! position after each record, so a committed batch says exactly where to resume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::retry::{Verdict, with_retries};
use super::run::Shared;
use crate::checkpoint::{Counts, Position};
use crate::error::{EngineError, SourceError};
use crate::event::EventKind;
use crate::record::Document;
use crate::source::SourceItem;
use crate::store::{Failure, MemoEntry};

/// Give up on a partition whose cursor keeps being refused after restarts.
const MAX_CURSOR_FALLBACKS: u32 = 3;

/// A fetched page, minus the records of it that were already committed.
pub(crate) struct PageMsg {
    partition: String,
    spot: PageSpot,
    items: Vec<SourceItem>,
}

/// Where a page stands in its partition.
struct PageSpot {
    cursor: Option<String>,
    next: Option<String>,
    /// Index in the page of the first item sent.
    first_index: usize,
    page_len: usize,
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
    /// Stage results to remember with this batch.
    pub memos: Vec<MemoEntry>,
    /// Position of each partition this batch moved, after its last record.
    pub positions: BTreeMap<String, Position>,
    /// What this batch adds to the run's counts (`stored` is added at commit).
    pub delta: Counts,
    pub formed_at: Instant,
}

/// Hands out the records `max_records` still allows, shared by all partitions.
pub(crate) struct FetchBudget {
    fetched: AtomicU64,
    limit: Option<u64>,
}

impl FetchBudget {
    pub fn new(already_fetched: u64, limit: Option<u64>) -> Self {
        Self { fetched: AtomicU64::new(already_fetched), limit }
    }

    /// Reserves up to `wanted` records; returns how many were granted.
    fn reserve(&self, wanted: usize) -> usize {
        let Some(limit) = self.limit else {
            self.fetched.fetch_add(wanted as u64, Ordering::Relaxed);
            return wanted;
        };
        let mut current = self.fetched.load(Ordering::Relaxed);
        loop {
            let granted = limit.saturating_sub(current).min(wanted as u64);
            match self.fetched.compare_exchange(current, current + granted, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return granted as usize,
                Err(actual) => current = actual,
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.fetched.load(Ordering::Relaxed) >= limit)
    }
}

/// Fetches every unfinished partition (a few at once) into `tx`. Ends when all
/// are read, the budget is spent, a stop is asked, or on a fatal error (which
/// it reports to `shared`).
pub(crate) async fn fetch_all(
    shared: Arc<Shared>,
    positions: BTreeMap<String, Position>,
    partitions: Vec<String>,
    tx: mpsc::Sender<PageMsg>,
) {
    let concurrency = shared.settings.partition_concurrency.max(1);
    futures::stream::iter(partitions)
        .map(|partition| {
            let start = positions.get(&partition).cloned().unwrap_or_default();
            fetch_partition(shared.clone(), partition, start, tx.clone())
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

async fn fetch_partition(shared: Arc<Shared>, partition: String, start: Position, tx: mpsc::Sender<PageMsg>) {
    if start.done {
        return;
    }
    let Position { mut cursor, mut skip, mut last_id, .. } = start;
    let mut fallbacks = 0;
    loop {
        if shared.ctx.stop.is_cancelled() || shared.abort.is_cancelled() || shared.budget.exhausted() {
            return;
        }
        let source = shared.source.clone();
        let result = with_retries(
            &shared.settings.retry,
            &shared.ctx,
            source.name(),
            &shared.abort,
            || source.fetch(&shared.ctx, &partition, cursor.as_deref()),
            |error: &SourceError| match error {
                SourceError::Retryable { retry_after, .. } => Verdict::Retry(*retry_after),
                _ => Verdict::Fatal,
            },
        )
        .await;
        let page = match result {
            Ok(page) => page,
            Err(SourceError::CursorInvalid { message }) if fallbacks < MAX_CURSOR_FALLBACKS => {
                fallbacks += 1;
                tracing::warn!(partition, %message, "Cursor fallback: invalid cursor");
                tracing::warn!(partition, "Cursor invalid on resume, restarted from beginning");
                shared
                    .ctx
                    .events
                    .emit(EventKind::CursorFallback { partition: partition.clone(), reason: message })
                    .await;
                (cursor, skip, last_id) = (None, 0, None);
                continue;
            }
            Err(error) => {
                shared.fail(EngineError::Source(error));
                return;
            }
        };
        shared
            .ctx
            .events
            .emit(EventKind::PageFetched {
                partition: partition.clone(),
                records: page.items.len() as u64,
                dropped: page.dropped,
                last_page: page.next.is_none(),
            })
            .await;

        let page_len = page.items.len();
        let first_index = resume_index(&page.items, skip, last_id.as_deref());
        (skip, last_id) = (0, None);
        let mut items = page.items;
        items.drain(..first_index);
        let granted = shared.budget.reserve(items.len());
        let limited = granted < items.len();
        if limited && granted == 0 {
            return; // the limit is reached; nothing of this page is consumed
        }
        items.truncate(granted);
        let next = page.next;
        let last_page = next.is_none();
        let spot = PageSpot { cursor: cursor.clone(), next: next.clone(), first_index, page_len };
        let msg = PageMsg { partition: partition.clone(), spot, items };
        if tx.send(msg).await.is_err() || limited || last_page {
            return;
        }
        cursor = next;
    }
}

/// Where to start in a re-fetched page: after `last_id` when it is still
/// there; if the page changed so that it is gone, from the top (re-doing a few
/// records is safe, skipping one that was never committed is not); with no
/// id, after `skip` records.
fn resume_index(items: &[SourceItem], skip: u64, last_id: Option<&str>) -> usize {
    if skip == 0 {
        return 0;
    }
    match last_id {
        Some(id) => items.iter().position(|item| item.id() == id).map_or(0, |i| i + 1),
        None => (skip as usize).min(items.len()),
    }
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
        let PageMsg { partition, spot, items } = msg;
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
    }
}

struct BatchBuilder {
    next_seq: u64,
    docs: Vec<Document>,
    failures: Vec<Failure>,
    positions: BTreeMap<String, Position>,
    bytes: usize,
}

impl BatchBuilder {
    fn new(next_seq: u64) -> Self {
        Self { next_seq, docs: Vec::new(), failures: Vec::new(), positions: BTreeMap::new(), bytes: 0 }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.docs.len() + self.failures.len()
    }

    fn push(&mut self, source_name: &str, item: SourceItem, bytes: usize) {
        self.bytes += bytes;
        match item {
            SourceItem::Record(record) => self.docs.push(Document::from_record(record)),
            SourceItem::Document(doc) => self.docs.push(*doc),
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
        let delta = Counts {
            fetched: (docs.len() + failures.len()) as u64,
            failed: failures.len() as u64,
            ..Counts::default()
        };
        tracing::info!("Processing batch {seq}: {} {noun}", docs.len() + failures.len());
        shared.progress.fetched(delta.fetched);
        self.bytes = 0;
        Batch {
            seq,
            docs,
            failures,
            memos: Vec::new(),
            positions: std::mem::take(&mut self.positions),
            delta,
            formed_at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn rec(id: &str) -> SourceItem {
        SourceItem::Record(Record::new("s", id, "t"))
    }

    #[test]
    fn resume_index_prefers_last_id_and_falls_back_to_top_when_it_moved() {
        let items = vec![rec("a"), rec("b"), rec("c")];
        assert_eq!(resume_index(&items, 0, None), 0);
        assert_eq!(resume_index(&items, 2, Some("b")), 2);
        assert_eq!(resume_index(&items, 2, Some("gone")), 0);
        assert_eq!(resume_index(&items, 2, None), 2);
        assert_eq!(resume_index(&items, 9, None), 3);
    }

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

    #[test]
    fn budget_grants_only_what_the_limit_allows_across_calls() {
        let budget = FetchBudget::new(90, Some(100));
        assert_eq!(budget.reserve(7), 7);
        assert_eq!(budget.reserve(7), 3);
        assert!(budget.exhausted());
        assert_eq!(budget.reserve(1), 0);
        assert_eq!(FetchBudget::new(0, None).reserve(5), 5);
    }
}
