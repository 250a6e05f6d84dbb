//! Fetching pages from every partition, a few at once, each from its
//! committed position, minus what the checkpoint says is already committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::batcher::{PageMsg, PageSpot};
use super::state::Shared;
use crate::checkpoint::Position;
use crate::error::{EngineError, SourceError};
use crate::event::EventKind;
use crate::mode::Mode;
use crate::retry::{Verdict, with_retries};
use crate::source::SourceItem;

/// Give up on a partition whose cursor keeps being refused after restarts.
const MAX_CURSOR_FALLBACKS: u32 = 3;

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
                // Read again from its start: records this run stored come back.
                shared.look_up_unchanged.store(true, Ordering::Relaxed);
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
        // A page read again part-way (a resume) had its dropped records counted already.
        let dropped = if first_index == 0 { page.dropped } else { 0 };
        if shared.settings.mode == Mode::Batch {
            // Batch mode counts them as fetched, so they spend the record budget too.
            shared.budget.charge(dropped);
        }
        let granted = shared.budget.reserve(items.len());
        let limited = granted < items.len();
        if limited && granted == 0 {
            return; // the limit is reached; nothing of this page is consumed
        }
        items.truncate(granted);
        let max_bytes = shared.settings.max_record_bytes;
        let items = items.into_iter().map(|item| refuse_oversized(item, max_bytes)).collect();
        let next = page.next;
        let last_page = next.is_none();
        let spot = PageSpot { cursor: cursor.clone(), next: next.clone(), first_index, page_len };
        let msg = PageMsg { partition: partition.clone(), spot, items, dropped };
        if tx.send(msg).await.is_err() || limited || last_page {
            return;
        }
        cursor = next;
    }
}

/// Text of an oversized record kept in its failures row (its fields are not):
/// enough to see what it is.
const OVERSIZED_TEXT_KEPT: usize = 4096;

/// A record holding more than `max_bytes` becomes a failure here, before any
/// stage: one huge record must not stall its batch or the run.
fn refuse_oversized(item: SourceItem, max_bytes: usize) -> SourceItem {
    let bytes = match &item {
        SourceItem::Record(record) => record.approx_bytes(),
        SourceItem::Document(doc) => doc.record.approx_bytes(),
        SourceItem::Invalid { .. } | SourceItem::Unchanged { .. } | SourceItem::Deleted { .. } => return item,
    };
    if bytes <= max_bytes {
        return item;
    }
    let mut record = match item {
        SourceItem::Record(record) => record,
        SourceItem::Document(doc) => doc.record,
        other => return other,
    };
    let mut cut = OVERSIZED_TEXT_KEPT.min(record.text.len());
    while !record.text.is_char_boundary(cut) {
        cut -= 1;
    }
    record.text.truncate(cut);
    record.fields.clear();
    SourceItem::Invalid {
        error: format!(
            "record {:?} holds {bytes} bytes, more than max_record_bytes = {max_bytes}; \
             raise max_record_bytes in the pipeline file to process it",
            record.id
        ),
        id: record.id.clone(),
        raw: serde_json::to_string(&record).unwrap_or_default(),
        error_type: "record_too_large".into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn rec(id: &str) -> SourceItem {
        SourceItem::Record(Record::new("s", id, "t"))
    }

    #[test]
    fn oversized_records_become_failures_that_name_the_record_and_the_limit() {
        let small = refuse_oversized(rec("small"), 1024);
        assert!(matches!(small, SourceItem::Record(ref r) if r.id == "small"));
        let big = SourceItem::Record(Record::new("s", "big", "é".repeat(5000)));
        let SourceItem::Invalid { id, raw, error_type, error } = refuse_oversized(big, 1024) else {
            panic!("an oversized record is refused");
        };
        assert_eq!((id.as_str(), error_type.as_str()), ("big", "record_too_large"));
        assert!(error.contains("\"big\"") && error.contains("max_record_bytes = 1024"), "{error}");
        let kept: Record = serde_json::from_str(&raw).expect("the payload is the record, its text cut");
        assert_eq!(kept.text.len(), OVERSIZED_TEXT_KEPT);
        assert_eq!(kept.id, "big");
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
}
