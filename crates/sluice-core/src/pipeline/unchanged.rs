//! Skipping unchanged work: before the first stage, one read of the store
//! tells which documents of a batch are stored with the same content by a
//! pipeline of the same fingerprint. Those leave the batch: no stage sees
//! them, nothing rewrites them, and only the checkpoint moves past them.

use std::sync::atomic::Ordering;

use super::batcher::Batch;
use super::state::Shared;
use crate::record::Document;
use crate::store::MemoKey;

/// Takes the unchanged documents out of the batch and counts them. A
/// lookup that fails or answers oddly only costs the saving: the whole
/// batch then goes through the stages as it would have.
pub(crate) async fn skip_unchanged(shared: &Shared, batch: &mut Batch) {
    let Some(fingerprint) = shared.fingerprint.as_deref() else { return };
    if batch.docs.is_empty() || !shared.look_up_unchanged.load(Ordering::Relaxed) {
        return;
    }
    let keys: Vec<MemoKey> = batch
        .docs
        .iter()
        .map(|d| MemoKey {
            source: d.source().to_string(),
            id: d.id().to_string(),
            content_hash: d.content_hash.clone(),
        })
        .collect();
    let found = match shared.store.unchanged(fingerprint, &keys).await {
        Ok(found) if found.len() == keys.len() => found,
        Ok(found) => {
            tracing::warn!(
                keys = keys.len(),
                answers = found.len(),
                "the store's answer to which documents are unchanged does not fit the batch; processing it all"
            );
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "could not tell which documents are unchanged; processing the batch anew");
            return;
        }
    };
    if !found.contains(&true) {
        // Nothing to take out (a first backfill): the documents stay where they are.
        return;
    }
    let docs = std::mem::take(&mut batch.docs);
    let (kept, skipped) = split_unchanged(docs, &found);
    batch.docs = kept;
    let memo_stages = shared.stages.iter().filter(|s| s.stage.memo().is_some()).count() as u64;
    count_unchanged(&mut batch.delta, skipped, memo_stages);
}

/// The documents not found unchanged, in order, and how many were.
fn split_unchanged(docs: Vec<Document>, unchanged: &[bool]) -> (Vec<Document>, u64) {
    let mut skipped = 0;
    let kept = docs
        .into_iter()
        .zip(unchanged)
        .filter_map(|(doc, &same)| {
            skipped += u64::from(same);
            (!same).then_some(doc)
        })
        .collect();
    (kept, skipped)
}

/// An unchanged record is not fetched again as far as the counts go (it was
/// counted when it was stored); it is `unchanged`, and each memoising stage
/// it skipped is a call saved.
fn count_unchanged(delta: &mut crate::checkpoint::Counts, skipped: u64, memo_stages: u64) {
    delta.fetched = delta.fetched.saturating_sub(skipped);
    delta.unchanged += skipped;
    delta.skipped_unchanged += skipped * memo_stages;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Counts;
    use crate::record::Record;

    #[test]
    fn unchanged_documents_leave_the_batch_and_the_rest_keep_their_order() {
        let docs: Vec<Document> =
            (0..5).map(|i| Document::from_record(Record::new("s", format!("d{i}"), "text"))).collect();
        let (kept, skipped) = split_unchanged(docs, &[true, false, true, false, false]);
        assert_eq!(skipped, 2);
        assert_eq!(kept.iter().map(Document::id).collect::<Vec<_>>(), ["d1", "d3", "d4"]);
    }

    #[test]
    fn unchanged_documents_count_as_unchanged_and_calls_saved_not_as_fetched() {
        let mut delta = Counts { fetched: 10, ..Counts::default() };
        count_unchanged(&mut delta, 4, 2);
        assert_eq!((delta.fetched, delta.unchanged, delta.skipped_unchanged), (6, 4, 8));
        assert_eq!(delta.seen(), 10);
    }
}
