//! The store suite: every behaviour a [`Store`] promises, run against each
//! backend (SQLite always; PostgreSQL when `SLUICE_TEST_POSTGRES_URL` names
//! a server, and always in CI). One function per behaviour takes a
//! [`StoreHarness`]; the `suite!` macro makes a test of it per backend:
//! `sqlite::NAME` and `postgres::NAME`. Backend-specific tests live in
//! `tests/sqlite_store.rs` and in `postgres_only.rs` here.

mod harness;
mod memo;
mod postgres_only;

use std::time::{Duration, Instant};

use harness::StoreHarness;
use serde_json::{Value, json};
use sluice_connectors::store::{ORPHANED_EMPTY_RUN_ERROR, ORPHANED_RUN_ERROR};
use sluice_core::store::{CommitBatch, DocumentUpdate, Failure, MemoEntry, MemoKey, NewRun, PhaseResult, RunStatus};
use sluice_core::{Checkpoint, Chunk, Classification, Document, Position, Record, StoreError};

/// One test per behaviour and backend: a backend is a module name and its
/// [`StoreHarness`] type.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        suite!(@backend sqlite, crate::harness::SqliteHarness; $($name),*);
        suite!(@backend postgres, crate::harness::PostgresHarness; $($name),*);
    };
    (@backend $backend:ident, $harness:path; $($name:ident),*) => {
        mod $backend {
            use crate::harness::StoreHarness;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = <$harness as StoreHarness>::fresh().await else { return };
                    super::$name(&h).await;
                    h.finish().await;
                }
            )*
        }
    };
}

suite!(
    reopening_keeps_the_data_and_applies_each_migration_once,
    run_lifecycle_sets_and_clears_finished_at_and_error,
    list_runs_is_newest_first_and_limited,
    commit_upserts_by_source_and_id_and_counts_every_write,
    upserting_a_document_replaces_its_chunks,
    batches_of_any_size_store_every_document_and_chunk,
    a_document_repeated_within_a_batch_is_written_once_per_occurrence_last_wins,
    a_long_commit_is_one_transaction_across_its_pieces,
    checkpoint_and_counts_are_written_together_and_read_back_equal,
    a_commit_failing_midway_leaves_documents_failures_and_checkpoint_unchanged,
    a_second_store_on_the_same_database_is_busy_while_the_guard_lives,
    active_run_is_the_running_run_only_while_the_slot_is_held,
    busy_without_a_running_run_reports_zero,
    runs_left_running_by_a_dead_process_become_failed_and_resumable_on_acquire,
    failures_are_recorded_listed_and_resolved_by_the_retry_that_stored_them,
    pages_not_fetched_are_resolved_by_the_retry_that_fetched_them,
    the_runbook_recovery_query_shows_the_checkpoint,
    an_unreadable_checkpoint_is_an_error_naming_the_run,
    memos_are_committed_with_the_batch_and_hit_only_on_same_content_and_fingerprint,
    embeddings_round_trip_exactly,
    later_phases_scan_in_id_order_update_without_rewriting_and_keep_results_per_run,
    results_written_ahead_are_found_and_the_ledger_only_grows,
    an_old_store_with_vectors_in_json_is_migrated_without_losing_a_memo_hit,
    deletions_mark_or_remove_and_a_marked_document_is_never_unchanged,
);

use memo::{
    an_old_store_with_vectors_in_json_is_migrated_without_losing_a_memo_hit,
    results_written_ahead_are_found_and_the_ledger_only_grows,
};

pub fn new_run(pipeline: &str) -> NewRun {
    NewRun {
        pipeline: pipeline.into(),
        phase: "classification".into(),
        config: json!({"source": {"type": "jsonl"}, "batch_size": 50}),
        window: Some(sluice_core::RunWindow { from: "2025-01-01".into(), to: "2025-03-31".into() }),
    }
}

pub fn doc(id: &str, text: &str) -> Document {
    Document::from_record(Record::new("src", id, text).with_field("title", format!("title {id}")))
}

pub fn chunk(index: u32, offset: usize, text: &str) -> Chunk {
    Chunk { index, offset, text: text.into(), embedding: Some(vec![index as f32, 0.5]) }
}

pub fn batch(documents: Vec<Document>) -> CommitBatch {
    CommitBatch { documents, ..CommitBatch::default() }
}

pub fn docs(ids: &[&str]) -> CommitBatch {
    batch(ids.iter().map(|id| doc(id, &format!("text of {id}"))).collect())
}

pub fn failure(record_id: &str, has_record: bool) -> Failure {
    Failure {
        source: "src".into(),
        record_id: record_id.into(),
        stage: "classify".into(),
        error_type: "http_500".into(),
        error: format!("classifier failed on {record_id}"),
        retryable: true,
        retry_count: 3,
        payload: format!(r#"{{"id":"{record_id}"}}"#),
        has_record,
    }
}

/// A checkpoint after `batches` batches of 50 on partition `main`.
pub fn checkpoint(batches: u64) -> Checkpoint {
    let mut cp = Checkpoint::new("classification");
    cp.batches = batches;
    cp.partitions.insert(
        "main".into(),
        Position {
            cursor: Some(format!("cursor-{batches}")),
            skip: 7,
            last_id: Some(format!("r{batches}")),
            done: false,
        },
    );
    cp.counts.fetched = 50 * batches;
    cp.counts.classified = 48 * batches;
    cp.counts.stored = 45 * batches;
    cp.counts.failed = 2 * batches;
    cp.counts.filtered = 3 * batches;
    cp
}

pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
}

fn json_of(text: &Option<String>) -> Value {
    serde_json::from_str(text.as_deref().expect("a JSON value, not NULL")).expect("JSON")
}

async fn reopening_keeps_the_data_and_applies_each_migration_once(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a", "b"]), &checkpoint(1)).await.unwrap();
    drop(store);

    let store = h.open().await;
    let again = h.open().await;
    assert_eq!(store.document_count().await.unwrap(), 2);
    assert_eq!(again.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
    let versions = h.rows("SELECT version FROM schema_migrations ORDER BY version").await;
    let versions: Vec<i64> = versions.iter().map(|r| r[0].as_deref().unwrap().parse().unwrap()).collect();
    // Numbers are reserved per feature: 0005, 0009 and 0010 (distributed runs) are PostgreSQL only, 0007 unused.
    let expected: &[i64] = if versions.contains(&5) { &[1, 2, 3, 4, 5, 6, 8, 9, 10] } else { &[1, 2, 3, 4, 6, 8] };
    assert_eq!(versions, expected, "each migration once, in order");
    assert!(versions.len() >= 2, "{versions:?}");
    assert!(store.describe().contains(&h.name_in_errors().replace("postgres://", "")), "{}", store.describe());
}

async fn run_lifecycle_sets_and_clears_finished_at_and_error(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("intercom")).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.pipeline, "intercom");
    assert_eq!(run.phase, "classification");
    assert_eq!(run.checkpoint, None, "no checkpoint before the first commit");
    assert_eq!(run.config, new_run("x").config);
    assert_eq!(run.date_from.as_deref(), Some("2025-01-01"));
    assert_eq!(run.date_to.as_deref(), Some("2025-03-31"));
    assert!(is_rfc3339_utc(&run.started_at), "{}", run.started_at);
    assert_eq!(run.finished_at, None);

    store.set_status(run.id, RunStatus::Stopping, None).await.unwrap();
    let r = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!((r.status, r.finished_at.as_deref()), (RunStatus::Stopping, None));

    store.set_status(run.id, RunStatus::Stopped, None).await.unwrap();
    let stopped = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stopped.status, RunStatus::Stopped);
    let finished = stopped.finished_at.clone().expect("stopped sets finished_at");
    assert!(is_rfc3339_utc(&finished) && finished >= run.started_at, "{finished}");

    // A late "stopping" (the stop watcher racing the end of the run) must not reopen it.
    store.set_status(run.id, RunStatus::Stopping, None).await.unwrap();
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Stopped);

    store.set_status(run.id, RunStatus::Failed, Some("source: 401 Unauthorized")).await.unwrap();
    let failed = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("source: 401 Unauthorized"));
    assert!(failed.finished_at.is_some());

    // Resume: back to running clears the end and the error.
    store.set_status(run.id, RunStatus::Running, None).await.unwrap();
    let resumed = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!((resumed.status, resumed.finished_at, resumed.error), (RunStatus::Running, None, None));
    assert_eq!(resumed.started_at, run.started_at, "resume keeps the original start");

    store.set_status(run.id, RunStatus::Completed, None).await.unwrap();
    let done = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert!(done.finished_at.is_some() && done.error.is_none());
    assert!(done.updated_at >= failed.updated_at);

    assert_eq!(store.get_run(run.id + 100).await.unwrap(), None);
    assert!(matches!(store.set_status(run.id + 100, RunStatus::Stopped, None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_status(run.id + 100, RunStatus::Stopping, None).await, Err(StoreError::NotFound(_))));
}

async fn list_runs_is_newest_first_and_limited(h: &dyn StoreHarness) {
    let store = h.open().await;
    let mut ids = vec![];
    for i in 0..5 {
        let run = store.create_run(&new_run(&format!("p{i}"))).await.unwrap();
        store.set_status(run.id, RunStatus::Completed, None).await.unwrap();
        ids.push(run.id);
    }
    let listed: Vec<_> = store.list_runs(3).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(listed, vec![ids[4], ids[3], ids[2]]);
    assert_eq!(store.list_runs(100).await.unwrap().len(), 5);
    assert!(store.list_runs(0).await.unwrap().is_empty());
    assert_eq!(store.list_runs(usize::MAX).await.unwrap().len(), 5);
}

async fn commit_upserts_by_source_and_id_and_counts_every_write(h: &dyn StoreHarness) {
    let store = h.open().await;
    let first = store.create_run(&new_run("p")).await.unwrap();
    store.commit(first.id, &docs(&["a", "b", "c"]), &checkpoint(1)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), 3);
    let a = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!(a.write_count, 1);
    assert_eq!(a.run_id, first.id);
    assert_eq!(a.text, "text of a");
    assert_eq!(a.fields.get("title"), Some(&json!("title a")));
    assert_eq!(a.content_hash, doc("a", "text of a").content_hash);
    assert!(is_rfc3339_utc(&a.stored_at), "{}", a.stored_at);

    // Same ids again (a resume re-fetching a page), one changed, plus a new one;
    // the same id in another source is another document.
    let second = store.create_run(&new_run("p")).await.unwrap();
    let mut batch = docs(&["a", "d"]);
    let mut changed = doc("b", "b was edited");
    changed.record.updated_at = Some(1_700_000_000);
    changed.classification = Some(Classification {
        category: "billing".into(),
        confidence: 0.9,
        reason: Some("mentions invoice".into()),
        classifier: "rules".into(),
    });
    changed.embedding = Some(vec![0.25, -1.0, 3.5]);
    batch.documents.push(changed.clone());
    batch.documents.push(Document::from_record(Record::new("other", "a", "same id, other source")));
    store.commit(second.id, &batch, &checkpoint(2)).await.unwrap();

    assert_eq!(store.document_count().await.unwrap(), 5, "a, b, c, d from src and a from other");
    let a = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((a.write_count, a.run_id), (2, second.id));
    let b = store.get_document("src", "b").await.unwrap().unwrap();
    assert_eq!((b.write_count, b.text.as_str()), (2, "b was edited"));
    assert_eq!(b.updated_at, Some(1_700_000_000));
    assert_eq!(b.content_hash, changed.content_hash);
    assert_eq!(b.category.as_deref(), Some("billing"));
    assert_eq!(b.classification, changed.classification);
    assert_eq!(b.embedding, Some(vec![0.25, -1.0, 3.5]));
    let c = store.get_document("src", "c").await.unwrap().unwrap();
    assert_eq!((c.write_count, c.run_id), (1, first.id), "c was not in the second batch");
    assert_eq!(store.get_document("other", "a").await.unwrap().unwrap().write_count, 1);
    assert_eq!(store.get_document("src", "zzz").await.unwrap(), None);

    let updated = h.rows("SELECT updated_at FROM documents WHERE id = 'b'").await;
    assert_eq!(updated[0][0].as_deref(), Some("1700000000"), "the record's time in seconds");
}

async fn upserting_a_document_replaces_its_chunks(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut d = doc("a", "one two three");
    d.chunks = vec![chunk(0, 0, "one"), chunk(1, 4, "two"), chunk(2, 8, "three")];
    let mut other = doc("b", "untouched");
    other.chunks = vec![chunk(0, 0, "untouched")];
    store.commit(run.id, &batch(vec![d.clone(), other]), &checkpoint(1)).await.unwrap();
    assert_eq!(store.chunk_count().await.unwrap(), 4);
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks);
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().chunks, 3);

    d.record.text = "uno dos".into();
    d.chunks = vec![chunk(0, 0, "uno"), Chunk { index: 1, offset: 4, text: "dos".into(), embedding: None }];
    store.commit(run.id, &batch(vec![d.clone()]), &checkpoint(2)).await.unwrap();
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks, "old chunks are gone, not merged");
    assert_eq!(store.get_chunks("src", "b").await.unwrap().len(), 1, "other documents keep theirs");
    assert_eq!(store.chunk_count().await.unwrap(), 3);

    d.chunks.clear();
    store.commit(run.id, &batch(vec![d]), &checkpoint(3)).await.unwrap();
    assert!(store.get_chunks("src", "a").await.unwrap().is_empty());
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().chunks, 0);
}

/// Batches of every size, over two sources, with chunks: all rows land, each once.
async fn batches_of_any_size_store_every_document_and_chunk(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let make = |n: usize, round: u32| {
        let mut d = Document::from_record(Record::new(
            if n.is_multiple_of(3) { "tickets" } else { "chats" },
            format!("d{n}"),
            format!("round {round} of {n}"),
        ));
        d.chunks = (0..(n % 4) as u32 + round).map(|i| chunk(i, i as usize * 10, &format!("r{round} c{i}"))).collect();
        d
    };
    let mut next = 0;
    for (b, size) in [1usize, 2, 3, 31, 32, 33, 50, 77, 200, 500].into_iter().enumerate() {
        let documents = (next..next + size).map(|n| make(n, 0)).collect();
        store.commit(run.id, &batch(documents), &checkpoint(b as u64 + 1)).await.unwrap();
        next += size;
    }
    assert_eq!(store.document_count().await.unwrap(), next as u64);
    let chunks: u64 = (0..next).map(|n| (n % 4) as u64).sum();
    assert_eq!(store.chunk_count().await.unwrap(), chunks);

    // Everything again, with one more chunk each, in one big batch.
    store.commit(run.id, &batch((0..next).map(|n| make(n, 1)).collect()), &checkpoint(20)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), next as u64);
    assert_eq!(store.chunk_count().await.unwrap(), chunks + next as u64);
    for n in [0, 1, 31, 32, 33, 100, next - 1] {
        let source = if n.is_multiple_of(3) { "tickets" } else { "chats" };
        let stored = store.get_document(source, &format!("d{n}")).await.unwrap().unwrap();
        assert_eq!((stored.write_count, stored.text), (2, format!("round 1 of {n}")));
        assert_eq!(store.get_chunks(source, &format!("d{n}")).await.unwrap(), make(n, 1).chunks);
    }
}

/// The same document twice in one commit (a cursor fallback, or a group
/// commit of two batches) ends as if written once per occurrence, in order:
/// the last version with its chunks, and a write counted per occurrence.
async fn a_document_repeated_within_a_batch_is_written_once_per_occurrence_last_wins(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut first = doc("a", "first");
    first.chunks = vec![chunk(0, 0, "first-0"), chunk(1, 6, "first-1"), chunk(2, 9, "first-2")];
    let mut second = doc("a", "second");
    second.chunks = vec![chunk(0, 0, "second-0")];
    let documents = vec![first.clone(), doc("b", "b"), second.clone(), doc("c", "c")];
    store.commit(run.id, &batch(documents), &checkpoint(1)).await.unwrap();
    let a = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((a.write_count, a.text.as_str(), a.chunks), (2, "second", 1));
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), second.chunks);
    assert_eq!(store.document_count().await.unwrap(), 3);

    // Existing row, three more occurrences: +3.
    let third = doc("a", "third");
    store.commit(run.id, &batch(vec![first, third.clone(), second, third]), &checkpoint(2)).await.unwrap();
    let a = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((a.write_count, a.text.as_str(), a.chunks), (6, "third", 0));
}

/// A commit of more documents than the SQLite writer takes at once (it gets
/// them in pieces of 32 while the rest are encoded) is still one
/// transaction: a repeat across pieces ends as its last occurrence, and a
/// failure in a late piece leaves nothing of the earlier ones.
async fn a_long_commit_is_one_transaction_across_its_pieces(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut documents: Vec<Document> = (0..100).map(|i| doc(&format!("d{i:03}"), &format!("first {i}"))).collect();
    documents[70] = doc("d005", "again");
    store.commit(run.id, &batch(documents), &checkpoint(1)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), 99);
    let again = store.get_document("src", "d005").await.unwrap().unwrap();
    assert_eq!((again.write_count, again.text.as_str()), (2, "again"));

    h.poison().await;
    let mut documents: Vec<Document> = (0..100).map(|i| doc(&format!("n{i:03}"), "new")).collect();
    documents[1] = doc("d001", "rewritten");
    documents[90] = doc("poison", "x");
    let err = store.commit(run.id, &batch(documents), &checkpoint(2)).await.unwrap_err();
    assert!(err.to_string().contains("poisoned document"), "{err}");
    assert_eq!(store.document_count().await.unwrap(), 99, "nothing of the earlier pieces stays");
    let d001 = store.get_document("src", "d001").await.unwrap().unwrap();
    assert_eq!((d001.write_count, d001.text.as_str()), (1, "first 1"));
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
}

async fn checkpoint_and_counts_are_written_together_and_read_back_equal(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut cp = checkpoint(3);
    cp.phase = "embedding_generation".into();
    cp.partitions.insert("2025-01".into(), Position { done: true, ..Position::default() });
    cp.counts.chunks = 12;
    cp.counts.embedded = 11;
    cp.counts.skipped_unchanged = 4;
    store.commit(run.id, &docs(&["a"]), &cp).await.unwrap();

    let read = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(read.checkpoint.as_ref(), Some(&cp));
    assert_eq!(read.phase, "embedding_generation", "the run's phase follows the checkpoint");
    let raw = h.rows(&format!("SELECT checkpoint, counts FROM pipeline_runs WHERE id = {}", run.id)).await;
    let (checkpoint_value, counts_value) = (json_of(&raw[0][0]), json_of(&raw[0][1]));
    assert_eq!(counts_value, checkpoint_value["counts"], "one schema for counts");
    assert_eq!(counts_value, serde_json::to_value(cp.counts).unwrap());
    assert_eq!(counts_value["stored"], 135);

    // A batch with nothing to store (all filtered) still moves the checkpoint.
    let mut later = cp.clone();
    later.batches += 1;
    later.counts.filtered += 50;
    store.commit(run.id, &CommitBatch::default(), &later).await.unwrap();
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(later));
    assert_eq!(store.document_count().await.unwrap(), 1);

    let err = store.commit(run.id + 7, &docs(&["z"]), &cp).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(store.get_document("src", "z").await.unwrap(), None, "nothing of a batch for an unknown run");
}

async fn a_commit_failing_midway_leaves_documents_failures_and_checkpoint_unchanged(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a", "b"]), &checkpoint(1)).await.unwrap();

    h.poison().await;
    let mut batch = docs(&["a", "new1", "poison", "new2"]);
    batch.documents[0].chunks = vec![chunk(0, 0, "a")];
    batch.failures.push(failure("x", true));
    batch.memos.push(memo("a", "h", "f", json!("label")));
    let err = store.commit(run.id, &batch, &checkpoint(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "a constraint is not worth retrying: {err:?}");
    let message = err.to_string();
    assert!(message.contains("poisoned document") && message.contains(&format!("run {}", run.id)), "{message}");
    let name = h.name_in_errors();
    let name = name.split_once("://").map_or(name.as_str(), |(_, rest)| rest);
    assert!(message.contains(name), "the message names the store: {message}");

    assert_eq!(store.document_count().await.unwrap(), 2);
    assert_eq!(store.get_document("src", "new1").await.unwrap(), None);
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().write_count, 1, "a's upsert rolled back");
    assert_eq!(store.chunk_count().await.unwrap(), 0);
    assert!(store.failures(run.id).await.unwrap().is_empty());
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
    let key = MemoKey { source: "src".into(), id: "a".into(), content_hash: "h".into() };
    assert_eq!(store.memo_lookup("classify", "f", &[key]).await.unwrap(), [None], "memos rolled back too");

    // The store is still usable, and the same batch without the poison commits.
    batch.documents.retain(|d| d.id() != "poison");
    store.commit(run.id, &batch, &checkpoint(2)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), 4);
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(2)));
}

async fn a_second_store_on_the_same_database_is_busy_while_the_guard_lives(h: &dyn StoreHarness) {
    let first = h.open().await;
    let second = h.open().await;
    let guard = first.acquire_active().await.unwrap();
    let run = first.create_run(&new_run("p")).await.unwrap();

    match second.acquire_active().await {
        Err(StoreError::Busy { active_run_id }) => assert_eq!(active_run_id, run.id),
        other => panic!("expected Busy, got {:?}", other.map(|_| ())),
    }
    // The same store instance cannot take it twice either.
    assert!(matches!(first.acquire_active().await, Err(StoreError::Busy { .. })));
    assert_eq!(first.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Running, "Busy changes nothing");

    first.set_status(run.id, RunStatus::Completed, None).await.unwrap();
    drop(guard);
    let guard = second.acquire_active().await.expect("free after the guard is dropped");
    assert_eq!(second.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Completed);
    drop(guard);
    let guard = first.acquire_active().await.expect("and free again");
    drop(guard);
}

async fn active_run_is_the_running_run_only_while_the_slot_is_held(h: &dyn StoreHarness) {
    let store = h.open().await;
    assert_eq!(store.active_run().await.unwrap(), None);
    let guard = store.acquire_active().await.unwrap();
    assert_eq!(store.active_run().await.unwrap(), None, "slot held, no run created yet");
    let run = store.create_run(&new_run("p")).await.unwrap();
    assert_eq!(h.open().await.active_run().await.unwrap().map(|r| r.id), Some(run.id), "seen from another store");
    assert!(
        matches!(h.open().await.acquire_active().await, Err(StoreError::Busy { active_run_id }) if active_run_id == run.id),
        "checking does not free the slot"
    );
    drop(guard); // the "process" died without finishing the run
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(store.active_run().await.unwrap(), None, "a run nobody holds the slot for is not active");
}

async fn busy_without_a_running_run_reports_zero(h: &dyn StoreHarness) {
    let first = h.open().await;
    let _guard = first.acquire_active().await.unwrap();
    assert!(matches!(h.open().await.acquire_active().await, Err(StoreError::Busy { active_run_id: 0 })));
}

async fn runs_left_running_by_a_dead_process_become_failed_and_resumable_on_acquire(h: &dyn StoreHarness) {
    let store = h.open().await;
    let guard = store.acquire_active().await.unwrap();
    let orphan = store.create_run(&new_run("p")).await.unwrap();
    store.commit(orphan.id, &docs(&["a"]), &checkpoint(1)).await.unwrap();
    let stopping = store.create_run(&new_run("p")).await.unwrap();
    store.set_status(stopping.id, RunStatus::Stopping, None).await.unwrap();
    let stopped = store.create_run(&new_run("p")).await.unwrap();
    store.set_status(stopped.id, RunStatus::Stopped, None).await.unwrap();
    let stopped_before = store.get_run(stopped.id).await.unwrap().unwrap();
    // The "process" dies: the lock goes away with it, the rows stay as they were.
    drop(guard);
    drop(store);

    let store = h.open().await;
    let _guard = store.acquire_active().await.unwrap();
    // The run that committed nothing is told to start anew: it has no checkpoint to resume.
    for (id, error) in [(orphan.id, ORPHANED_RUN_ERROR), (stopping.id, ORPHANED_EMPTY_RUN_ERROR)] {
        let run = store.get_run(id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed, "run {id}");
        assert_eq!(run.error.as_deref(), Some(error));
        assert!(run.finished_at.is_some());
        assert!(run.status.is_resumable());
    }
    let orphan = store.get_run(orphan.id).await.unwrap().unwrap();
    assert_eq!(orphan.checkpoint, Some(checkpoint(1)), "the checkpoint survives for the resume");
    assert_eq!(store.get_run(stopped.id).await.unwrap().unwrap(), stopped_before, "finished runs are left alone");
}

async fn pages_not_fetched_are_resolved_by_the_retry_that_fetched_them(h: &dyn StoreHarness) {
    let store = h.open().await;
    let first = store.create_run(&new_run("p")).await.unwrap();
    let mut b = docs(&["ok"]);
    b.failures = vec![failure("page", false), failure("gone", false), failure("rec", true)];
    store.commit(first.id, &b, &checkpoint(1)).await.unwrap();
    // The refetch stores "page" and "rec"; "gone" fails again.
    let retry = store.create_run(&new_run("p")).await.unwrap();
    let mut b = docs(&["page", "rec"]);
    b.failures = vec![failure("gone", false)];
    store.commit(retry.id, &b, &checkpoint(1)).await.unwrap();
    assert_eq!(store.resolve_refetched(first.id, retry.id).await.unwrap(), 1);
    let resolved: Vec<_> =
        store.failures(first.id).await.unwrap().into_iter().map(|r| (r.failure.record_id, r.resolved_by)).collect();
    assert_eq!(
        resolved,
        [("page".into(), Some(retry.id)), ("gone".into(), None), ("rec".into(), None)],
        "a failure with a record is resolve_failures' business"
    );
}

async fn failures_are_recorded_listed_and_resolved_by_the_retry_that_stored_them(h: &dyn StoreHarness) {
    let store = h.open().await;
    let first = store.create_run(&new_run("p")).await.unwrap();
    let mut b = docs(&["ok"]);
    b.failures = vec![failure("a", true), failure("b", true), failure("c", true), failure("raw", false)];
    store.commit(first.id, &b, &checkpoint(1)).await.unwrap();
    let rows = store.failures(first.id).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.failure.record_id.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "raw"]);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(rows[0].failure, failure("a", true), "every field round-trips");
    assert_eq!(rows[0].run_id, first.id);
    assert!(is_rfc3339_utc(&rows[0].created_at));
    assert!(rows.iter().all(|r| r.resolved_by.is_none()));

    // The retry stores a and raw, fails b again, and does not get to c.
    let retry = store.create_run(&new_run("p")).await.unwrap();
    let mut b = docs(&["a", "b", "raw"]);
    b.failures = vec![failure("b", true)];
    store.commit(retry.id, &b, &checkpoint(1)).await.unwrap();
    assert_eq!(store.failures(retry.id).await.unwrap().len(), 1);

    assert_eq!(store.resolve_failures(first.id, retry.id).await.unwrap(), 1);
    let resolved: Vec<_> =
        store.failures(first.id).await.unwrap().into_iter().map(|r| (r.failure.record_id, r.resolved_by)).collect();
    assert_eq!(
        resolved,
        [("a".into(), Some(retry.id)), ("b".into(), None), ("c".into(), None), ("raw".into(), None)],
        "b failed again, c was not stored, raw had no record to retry"
    );
    assert_eq!(store.resolve_failures(first.id, retry.id).await.unwrap(), 0, "resolving twice changes nothing");
    assert!(store.failures(first.id + 50).await.unwrap().is_empty());
}

async fn the_runbook_recovery_query_shows_the_checkpoint(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("intercom")).await.unwrap();
    store.commit(run.id, &docs(&["a"]), &checkpoint(2)).await.unwrap();
    store.set_status(run.id, RunStatus::Stopped, None).await.unwrap();

    // Verbatim from the Intercom backfill runbook.
    let sql = "SELECT id, status, checkpoint, date_from, date_to
FROM pipeline_runs
ORDER BY id DESC
LIMIT 1;";
    let rows = h.rows(sql).await;
    let row = &rows[0];
    let text = |i: usize| row[i].clone().unwrap_or_default();
    assert_eq!(
        (text(0), text(1), text(3), text(4)),
        (run.id.to_string(), "stopped".into(), "2025-01-01".into(), "2025-03-31".into())
    );
    let value = json_of(&row[2]);
    assert_eq!(value["phase"], "classification");
    assert_eq!(value["counts"]["fetched"], 100);
    assert_eq!(value["counts"]["stored"], 90);
    assert_eq!(value["partitions"]["main"]["cursor"], "cursor-2");
}

async fn an_unreadable_checkpoint_is_an_error_naming_the_run(h: &dyn StoreHarness) {
    let store = h.open().await;
    let good = store.create_run(&new_run("p")).await.unwrap();
    let bad = store.create_run(&new_run("p")).await.unwrap();
    // Valid JSON (jsonb would refuse anything else) that is not a checkpoint.
    h.exec(&format!(
        "UPDATE pipeline_runs SET checkpoint = '{{\"phase\": 3, \"counts\": \"x\"}}' WHERE id = {}",
        bad.id
    ))
    .await;
    let err = store.get_run(bad.id).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", bad.id)) && err.contains("checkpoint"), "{err}");
    let err = store.list_runs(10).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", bad.id)), "{err}");
    assert!(store.get_run(good.id).await.unwrap().is_some(), "other runs still read");

    // The schema refuses an unknown status; if one gets in anyway, reading it is an error, not a panic.
    h.force_status(good.id, "paused").await;
    let err = store.get_run(good.id).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", good.id)) && err.contains("paused"), "{err}");
}

async fn deletions_mark_or_remove_and_a_marked_document_is_never_unchanged(h: &dyn StoreHarness) {
    use sluice_core::store::{Deletion, OnDelete};
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    assert!(!store.holds_documents().await.unwrap(), "a new store holds no document");
    let mut stored = docs(&["a", "b", "c"]);
    stored.fingerprint = Some("fp".into());
    store.commit(run.id, &stored, &checkpoint(1)).await.unwrap();
    assert!(store.holds_documents().await.unwrap());
    let keys: Vec<MemoKey> = stored
        .documents
        .iter()
        .map(|d| MemoKey { source: "src".into(), id: d.id().into(), content_hash: d.content_hash.clone() })
        .collect();
    assert_eq!(store.unchanged("fp", &keys).await.unwrap(), [true, true, true]);

    // b marked, c removed (with its chunks); a untouched.
    let gone = |id: &str, action| Deletion { source: "src".into(), id: id.into(), action };
    let deletions = CommitBatch {
        deletions: vec![gone("b", OnDelete::Mark), gone("c", OnDelete::Remove)],
        ..CommitBatch::default()
    };
    store.commit(run.id, &deletions, &checkpoint(2)).await.unwrap();
    assert_eq!(store.deleted_ids("src").await.unwrap(), ["b"]);
    assert_eq!(store.get_document("src", "c").await.unwrap(), None);
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().write_count, 1);
    let scanned: Vec<String> =
        store.scan_documents("src", None, 10).await.unwrap().iter().map(|d| d.id().to_string()).collect();
    assert_eq!(scanned, ["a"], "a marked document is left out of reads");
    // Its content is the stored one, yet it is not unchanged: stored again, it is no longer marked.
    assert_eq!(store.unchanged("fp", &keys).await.unwrap(), [true, false, false]);
    let only_marked = CommitBatch { deletions: vec![gone("a", OnDelete::Remove)], ..CommitBatch::default() };
    store.commit(run.id, &only_marked, &checkpoint(3)).await.unwrap();
    assert!(store.holds_documents().await.unwrap(), "a marked document is still held (and never unchanged)");
    store.commit(run.id, &batch(vec![stored.documents[1].clone()]), &checkpoint(4)).await.unwrap();
    assert!(store.deleted_ids("src").await.unwrap().is_empty());
}

pub fn memo(id: &str, content_hash: &str, fingerprint: &str, value: Value) -> MemoEntry {
    MemoEntry {
        source: "src".into(),
        id: id.into(),
        stage: "classify".into(),
        fingerprint: fingerprint.into(),
        content_hash: content_hash.into(),
        value,
    }
}

async fn memos_are_committed_with_the_batch_and_hit_only_on_same_content_and_fingerprint(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let key = |id: &str, hash: &str| MemoKey { source: "src".into(), id: id.into(), content_hash: hash.into() };
    assert!(store.memo_lookup("classify", "f1", &[]).await.unwrap().is_empty());
    assert_eq!(store.memo_lookup("classify", "f1", &[key("a", "h1")]).await.unwrap(), [None]);

    let mut b = docs(&["a", "b"]);
    let label = json!({"category": "billing", "confidence": 0.75});
    // The same key twice in one commit (two batches in a group commit): the last one stays.
    b.memos = vec![
        memo("a", "h1", "f1", json!("stale")),
        memo("b", "h2", "f1", json!([1, 2])),
        memo("a", "h1", "f1", label.clone()),
    ];
    store.commit(run.id, &b, &checkpoint(1)).await.unwrap();

    let keys = [key("b", "h2"), key("a", "h1"), key("a", "changed"), key("zzz", "h1"), key("a", "h1")];
    let found = store.memo_lookup("classify", "f1", &keys).await.unwrap();
    assert_eq!(
        found,
        [Some(json!([1, 2])), Some(label.clone()), None, None, Some(label.clone())],
        "one answer per key, in order"
    );
    assert_eq!(store.memo_lookup("classify", "f2", &[key("a", "h1")]).await.unwrap(), [None], "other fingerprint");
    assert_eq!(store.memo_lookup("embed", "f1", &[key("a", "h1")]).await.unwrap(), [None], "other stage");

    // A newer result for the same (source, id, stage) replaces the old one.
    let b = CommitBatch { memos: vec![memo("a", "h9", "f2", json!("new"))], ..CommitBatch::default() };
    store.commit(run.id, &b, &checkpoint(2)).await.unwrap();
    assert_eq!(store.memo_lookup("classify", "f1", &[key("a", "h1")]).await.unwrap(), [None]);
    assert_eq!(store.memo_lookup("classify", "f2", &[key("a", "h9")]).await.unwrap(), [Some(json!("new"))]);
}

async fn embeddings_round_trip_exactly(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let values = [0.0f32, -1.5, f32::MAX, 3.25e-7, f32::MIN_POSITIVE, 1.0 / 3.0];
    let mut d = doc("a", "text");
    d.embedding = Some(values.to_vec());
    d.chunks = vec![Chunk { index: 0, offset: 0, text: "text".into(), embedding: Some(vec![0.1, 0.2]) }];
    let mut none = doc("b", "no embedding");
    none.chunks = vec![Chunk { index: 0, offset: 0, text: "x".into(), embedding: None }];
    store.commit(run.id, &batch(vec![d.clone(), none]), &checkpoint(1)).await.unwrap();
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().embedding, d.embedding);
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks);
    assert_eq!(store.get_document("src", "b").await.unwrap().unwrap().embedding, None);
    assert_eq!(store.get_chunks("src", "b").await.unwrap()[0].embedding, None);
}

async fn later_phases_scan_in_id_order_update_without_rewriting_and_keep_results_per_run(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut labelled = doc("b", "second");
    labelled.classification =
        Some(Classification { category: "bug".into(), confidence: 0.9, reason: None, classifier: "rules".into() });
    labelled.chunks = vec![chunk(0, 0, "second")];
    let mut other_source = doc("a0", "elsewhere");
    other_source.record.source = "other".into();
    store
        .commit(
            run.id,
            &batch(vec![doc("c", "third"), labelled.clone(), doc("a", "first"), other_source]),
            &checkpoint(1),
        )
        .await
        .unwrap();

    // Pages of 2 in id order, of one source only, with what the first phase stored.
    let first = store.scan_documents("src", None, 2).await.unwrap();
    assert_eq!(first.iter().map(|d| d.id()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(first[1].classification, labelled.classification);
    assert_eq!(first[1].content_hash, labelled.content_hash);
    assert_eq!(first[1].record, labelled.record);
    assert!(first[1].chunks.is_empty(), "chunks are not read back");
    let rest = store.scan_documents("src", Some("b"), 2).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id()).collect::<Vec<_>>(), ["c"]);
    // What a later phase's progress counts towards: the documents of one source.
    assert_eq!(store.count_documents("src").await.unwrap(), Some(3));
    assert_eq!(store.count_documents("other").await.unwrap(), Some(1));
    assert_eq!(store.count_documents("none").await.unwrap(), Some(0));

    // An update sets the embedding and annotations and leaves the record and its write count alone.
    let mut annotations = serde_json::Map::new();
    annotations.insert("facets".into(), json!({"sentiment": "negative"}));
    let update = |id: &str, embedding: Option<Vec<f32>>| DocumentUpdate {
        source: "src".into(),
        id: id.into(),
        embedding,
        annotations: annotations.clone(),
    };
    let results = vec![
        PhaseResult { kind: "theme".into(), key: "t1".into(), value: json!({"label": "billing"}) },
        PhaseResult { kind: "theme".into(), key: "t0".into(), value: json!({"label": "login"}) },
        PhaseResult { kind: "story".into(), key: "s0".into(), value: json!({"title": "x"}) },
    ];
    let b = CommitBatch {
        updates: vec![update("b", Some(vec![0.25, -1.0])), update("c", None)],
        results,
        ..CommitBatch::default()
    };
    store.commit(run.id, &b, &checkpoint(2)).await.unwrap();
    let b_doc = store.get_document("src", "b").await.unwrap().unwrap();
    assert_eq!(b_doc.embedding, Some(vec![0.25, -1.0]));
    assert_eq!(b_doc.annotations, annotations);
    assert_eq!((b_doc.write_count, b_doc.chunks, b_doc.text.as_str()), (1, 1, "second"));
    assert_eq!(store.get_document("src", "c").await.unwrap().unwrap().annotations, annotations);
    assert!(store.get_document("src", "a").await.unwrap().unwrap().annotations.is_empty());
    assert_eq!(store.scan_documents("src", Some("a"), 1).await.unwrap()[0].annotations, annotations);

    // Results are per (run, kind, key): written again, they are replaced; listed by key.
    let again = PhaseResult { kind: "theme".into(), key: "t1".into(), value: json!({"label": "invoices"}) };
    store
        .commit(run.id, &CommitBatch { results: vec![again.clone()], ..CommitBatch::default() }, &checkpoint(3))
        .await
        .unwrap();
    let themes = store.phase_results(run.id, "theme").await.unwrap();
    assert_eq!(themes.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["t0", "t1"]);
    assert_eq!(themes[1], again);
    assert_eq!(store.phase_results(run.id, "story").await.unwrap().len(), 1);
    let other = store.create_run(&new_run("p")).await.unwrap();
    assert!(store.phase_results(other.id, "theme").await.unwrap().is_empty());
}

/// Waits until `f` is true, up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
