//! The SQLite store on real files: run lifecycle, atomic commits, the run
//! slot, the failures table, and the errors a user meets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_connectors::store::sqlite::ORPHANED_RUN_ERROR;
use sluice_connectors::store::{SqliteConfig, SqliteStore, embedding_to_bytes};
use sluice_core::store::{CommitBatch, Failure, NewRun, RunStatus, Store};
use sluice_core::{Checkpoint, Chunk, Classification, Document, Position, Record, StoreError};

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sluice.db")
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&db(dir)).expect("open store")
}

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("raw connection");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

fn new_run(pipeline: &str) -> NewRun {
    NewRun {
        pipeline: pipeline.into(),
        phase: "classification".into(),
        config: json!({"source": {"type": "jsonl"}, "batch_size": 50}),
        date_from: Some("2025-01-01".into()),
        date_to: Some("2025-03-31".into()),
    }
}

fn doc(id: &str, text: &str) -> Document {
    Document::from_record(Record::new("src", id, text).with_field("title", format!("title {id}")))
}

fn chunk(index: u32, offset: usize, text: &str) -> Chunk {
    Chunk { index, offset, text: text.into(), embedding: Some(vec![index as f32, 0.5]) }
}

fn docs(ids: &[&str]) -> CommitBatch {
    CommitBatch {
        documents: ids.iter().map(|id| doc(id, &format!("text of {id}"))).collect(),
        ..CommitBatch::default()
    }
}

fn failure(record_id: &str, has_record: bool) -> Failure {
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
fn checkpoint(batches: u64) -> Checkpoint {
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

fn is_rfc3339_utc(s: &str) -> bool {
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

#[tokio::test]
async fn open_creates_the_schema_once_and_reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a", "b"]), &checkpoint(1)).await.unwrap();
    drop(store);

    let store = SqliteConfig { path: db(&dir) }.open().unwrap();
    assert_eq!(store.document_count().await.unwrap(), 2);
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));
    let conn = raw(&db(&dir));
    let versions: Vec<(i64, String)> = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let numbers: Vec<i64> = versions.iter().map(|(v, _)| *v).collect();
    assert_eq!(numbers, vec![1, 2], "each migration applied once");
    assert!(is_rfc3339_utc(&versions[0].1), "{}", versions[0].1);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(store.describe(), format!("sqlite:{}", db(&dir).display()));
}

#[tokio::test]
async fn a_database_from_a_newer_sluice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    raw(&db(&dir)).execute("INSERT INTO schema_migrations VALUES (99, 'x')", []).unwrap();
    let err = SqliteStore::open(&db(&dir)).unwrap_err().to_string();
    assert!(err.contains("schema version 99") && err.contains(&db(&dir).display().to_string()), "{err}");
}

#[tokio::test]
async fn run_lifecycle_sets_and_clears_finished_at_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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

#[tokio::test]
async fn list_runs_is_newest_first_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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

#[tokio::test]
async fn commit_upserts_by_source_and_id_and_counts_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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

    let conn = raw(&db(&dir));
    let blob: Vec<u8> = conn.query_row("SELECT embedding FROM documents WHERE id = 'b'", [], |r| r.get(0)).unwrap();
    assert_eq!(blob, embedding_to_bytes(&[0.25, -1.0, 3.5]), "embedding is little-endian f32");
    let updated: i64 = conn.query_row("SELECT updated_at FROM documents WHERE id = 'b'", [], |r| r.get(0)).unwrap();
    assert_eq!(updated, 1_700_000_000);
}

#[tokio::test]
async fn upserting_a_document_replaces_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut d = doc("a", "one two three");
    d.chunks = vec![chunk(0, 0, "one"), chunk(1, 4, "two"), chunk(2, 8, "three")];
    let mut other = doc("b", "untouched");
    other.chunks = vec![chunk(0, 0, "untouched")];
    let batch = CommitBatch { documents: vec![d.clone(), other], failures: vec![], memos: vec![] };
    store.commit(run.id, &batch, &checkpoint(1)).await.unwrap();
    assert_eq!(store.chunk_count().await.unwrap(), 4);
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks);
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().chunks, 3);

    d.record.text = "uno dos".into();
    d.chunks = vec![chunk(0, 0, "uno"), Chunk { index: 1, offset: 4, text: "dos".into(), embedding: None }];
    store
        .commit(run.id, &CommitBatch { documents: vec![d.clone()], failures: vec![], memos: vec![] }, &checkpoint(2))
        .await
        .unwrap();
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), d.chunks, "old chunks are gone, not merged");
    assert_eq!(store.get_chunks("src", "b").await.unwrap().len(), 1, "other documents keep theirs");
    assert_eq!(store.chunk_count().await.unwrap(), 3);

    d.chunks.clear();
    store
        .commit(run.id, &CommitBatch { documents: vec![d], failures: vec![], memos: vec![] }, &checkpoint(3))
        .await
        .unwrap();
    assert!(store.get_chunks("src", "a").await.unwrap().is_empty());
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().chunks, 0);
}

/// Batches of every size, over two sources, with chunks: all rows land, each once.
#[tokio::test]
async fn batches_of_any_size_store_every_document_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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
    for (b, size) in [1usize, 2, 3, 31, 32, 33, 50, 77, 200].into_iter().enumerate() {
        let batch = CommitBatch {
            documents: (next..next + size).map(|n| make(n, 0)).collect(),
            failures: vec![],
            memos: vec![],
        };
        store.commit(run.id, &batch, &checkpoint(b as u64 + 1)).await.unwrap();
        next += size;
    }
    assert_eq!(store.document_count().await.unwrap(), next as u64);
    let chunks: u64 = (0..next).map(|n| (n % 4) as u64).sum();
    assert_eq!(store.chunk_count().await.unwrap(), chunks);

    // Everything again, with one more chunk each, in one big batch.
    let batch = CommitBatch { documents: (0..next).map(|n| make(n, 1)).collect(), failures: vec![], memos: vec![] };
    store.commit(run.id, &batch, &checkpoint(20)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), next as u64);
    assert_eq!(store.chunk_count().await.unwrap(), chunks + next as u64);
    for n in [0, 1, 31, 32, 33, 100, next - 1] {
        let source = if n.is_multiple_of(3) { "tickets" } else { "chats" };
        let stored = store.get_document(source, &format!("d{n}")).await.unwrap().unwrap();
        assert_eq!((stored.write_count, stored.text), (2, format!("round 1 of {n}")));
        assert_eq!(store.get_chunks(source, &format!("d{n}")).await.unwrap(), make(n, 1).chunks);
    }
}

/// The same document twice in one batch is written twice, in order, like two batches would.
#[tokio::test]
async fn a_document_repeated_within_a_batch_is_written_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut first = doc("a", "first");
    first.chunks = vec![chunk(0, 0, "first-0"), chunk(1, 6, "first-1"), chunk(2, 9, "first-2")];
    let mut second = doc("a", "second");
    second.chunks = vec![chunk(0, 0, "second-0")];
    let batch = CommitBatch {
        documents: vec![first, doc("b", "b"), second.clone(), doc("c", "c")],
        failures: vec![],
        memos: vec![],
    };
    store.commit(run.id, &batch, &checkpoint(1)).await.unwrap();
    let a = store.get_document("src", "a").await.unwrap().unwrap();
    assert_eq!((a.write_count, a.text.as_str(), a.chunks), (2, "second", 1));
    assert_eq!(store.get_chunks("src", "a").await.unwrap(), second.chunks);
    assert_eq!(store.document_count().await.unwrap(), 3);
}

#[tokio::test]
async fn checkpoint_and_counts_are_written_together_and_read_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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
    let (checkpoint_json, counts_json): (String, String) = raw(&db(&dir))
        .query_row("SELECT checkpoint, counts FROM pipeline_runs WHERE id = ?1", [run.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let checkpoint_value: serde_json::Value = serde_json::from_str(&checkpoint_json).unwrap();
    let counts_value: serde_json::Value = serde_json::from_str(&counts_json).unwrap();
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

#[tokio::test]
async fn a_commit_failing_midway_leaves_documents_failures_and_checkpoint_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    store.commit(run.id, &docs(&["a", "b"]), &checkpoint(1)).await.unwrap();

    raw(&db(&dir))
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON documents WHEN NEW.id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned document'); END;",
        )
        .unwrap();
    let mut batch = docs(&["a", "new1", "poison", "new2"]);
    batch.documents[0].chunks = vec![chunk(0, 0, "a")];
    batch.failures.push(failure("x", true));
    let err = store.commit(run.id, &batch, &checkpoint(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "a constraint is not worth retrying: {err:?}");
    let message = err.to_string();
    assert!(message.contains("poisoned document") && message.contains(&format!("run {}", run.id)), "{message}");
    assert!(message.contains(&db(&dir).display().to_string()), "{message}");

    assert_eq!(store.document_count().await.unwrap(), 2);
    assert_eq!(store.get_document("src", "new1").await.unwrap(), None);
    assert_eq!(store.get_document("src", "a").await.unwrap().unwrap().write_count, 1, "a's upsert rolled back");
    assert_eq!(store.chunk_count().await.unwrap(), 0);
    assert!(store.failures(run.id).await.unwrap().is_empty());
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(1)));

    // The store is still usable, and the same batch without the poison commits.
    batch.documents.retain(|d| d.id() != "poison");
    store.commit(run.id, &batch, &checkpoint(2)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), 4);
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint, Some(checkpoint(2)));
}

#[tokio::test]
async fn a_locked_database_is_unavailable_not_fatal_and_the_retry_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    let blocker = raw(&db(&dir));
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = store.commit(run.id, &docs(&["a"]), &checkpoint(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "busy must be retryable: {err:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "waits for the busy timeout first");
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.document_count().await.unwrap(), 0);
    store.commit(run.id, &docs(&["a"]), &checkpoint(1)).await.unwrap();
    assert_eq!(store.document_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_second_store_on_the_same_file_is_busy_while_the_guard_lives() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let second = open(&dir);
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
    assert!(second.lock_path().exists());
}

#[tokio::test]
async fn active_run_is_the_running_run_only_while_the_slot_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.active_run().await.unwrap(), None);
    let guard = store.acquire_active().await.unwrap();
    assert_eq!(store.active_run().await.unwrap(), None, "slot held, no run created yet");
    let run = store.create_run(&new_run("p")).await.unwrap();
    assert_eq!(open(&dir).active_run().await.unwrap().map(|r| r.id), Some(run.id), "seen from another store");
    assert!(
        matches!(open(&dir).acquire_active().await, Err(StoreError::Busy { active_run_id }) if active_run_id == run.id),
        "checking does not free the slot"
    );
    drop(guard); // the "process" died without finishing the run
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(store.active_run().await.unwrap(), None, "a run nobody holds the slot for is not active");
}

#[tokio::test]
async fn busy_without_a_running_run_reports_zero() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let _guard = first.acquire_active().await.unwrap();
    assert!(matches!(open(&dir).acquire_active().await, Err(StoreError::Busy { active_run_id: 0 })));
}

#[tokio::test]
async fn runs_left_running_by_a_dead_process_become_failed_and_resumable_on_acquire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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

    let store = open(&dir);
    let _guard = store.acquire_active().await.unwrap();
    for id in [orphan.id, stopping.id] {
        let run = store.get_run(id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed, "run {id}");
        assert_eq!(run.error.as_deref(), Some(ORPHANED_RUN_ERROR));
        assert!(run.finished_at.is_some());
        assert!(run.status.is_resumable());
    }
    let orphan = store.get_run(orphan.id).await.unwrap().unwrap();
    assert_eq!(orphan.checkpoint, Some(checkpoint(1)), "the checkpoint survives for the resume");
    assert_eq!(store.get_run(stopped.id).await.unwrap().unwrap(), stopped_before, "finished runs are left alone");
}

/// The slot is an OS lock: held by another process, the store is busy; once
/// that process is killed with SIGKILL, the kernel frees it.
#[tokio::test]
async fn the_run_slot_is_freed_when_the_holding_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let lock = store.lock_path().to_path_buf();
    // A shell opens the lock file on fd 9, locks it with flock(1) (flock(2),
    // the lock std's File::try_lock takes on Linux), then becomes `sleep`
    // holding it: one process, whose pid we know.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec 9>>"$0" && flock --exclusive 9 && exec sleep 60"#)
        .arg(&lock)
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped: cannot run sh");
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.acquire_active().await {
            Err(StoreError::Busy { .. }) => break,
            Ok(guard) => {
                drop(guard); // the child has not taken it yet
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("skipped: the lock holder exited early ({status}); is flock(1) installed?");
                    return;
                }
                assert!(Instant::now() < deadline, "the child never took the lock");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let guard = store.acquire_active().await.expect("the kernel released the dead process's lock");
    drop(guard);
}

#[tokio::test]
async fn failures_are_recorded_listed_and_resolved_by_the_retry_that_stored_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.create_run(&new_run("p")).await.unwrap();
    let batch = CommitBatch {
        documents: docs(&["ok"]).documents,
        failures: vec![failure("a", true), failure("b", true), failure("c", true), failure("raw", false)],
        memos: vec![],
    };
    store.commit(first.id, &batch, &checkpoint(1)).await.unwrap();
    let rows = store.failures(first.id).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.failure.record_id.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "raw"]);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(rows[0].failure, failure("a", true), "every field round-trips");
    assert_eq!(rows[0].run_id, first.id);
    assert!(is_rfc3339_utc(&rows[0].created_at));
    assert!(rows.iter().all(|r| r.resolved_by.is_none()));

    // The retry stores a and raw, fails b again, and does not get to c.
    let retry = store.create_run(&new_run("p")).await.unwrap();
    let batch = CommitBatch {
        documents: docs(&["a", "b", "raw"]).documents,
        failures: vec![failure("b", true)],
        memos: vec![],
    };
    store.commit(retry.id, &batch, &checkpoint(1)).await.unwrap();
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

#[tokio::test]
async fn opening_in_a_missing_directory_is_a_clear_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("sluice.db");
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.path().join("no").exists(), "missing directories are not created");
}

#[tokio::test]
async fn opening_a_directory_or_a_non_database_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("directory"), "{err}");

    let err = SqliteStore::open(Path::new(":memory:")).unwrap_err().to_string();
    assert!(err.contains(":memory:") && err.contains("file path"), "{err}");
    assert!(!Path::new(":memory:.lock").exists());

    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "these are not the pages you are looking for ".repeat(200)).unwrap();
    let err = SqliteStore::open(&junk).unwrap_err().to_string();
    assert!(err.contains(&junk.display().to_string()) && err.contains("not a SQLite database"), "{err}");
}

#[tokio::test]
async fn opening_in_a_read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable_anyway = std::fs::write(ro.join("probe"), b"x").is_ok();
    let result = if writable_anyway {
        eprintln!("skipped: permissions are not enforced here (running as root?)");
        None
    } else {
        Some(SqliteStore::open(&ro.join("sluice.db")).map(|_| ()))
    };
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(result) = result {
        let err = result.unwrap_err().to_string();
        eprintln!("read-only directory: {err}");
        let path = ro.join("sluice.db").display().to_string();
        assert!(err.contains(&path) && err.contains("writable"), "{err}");
    }
}

/// A database file (and its directory) this user cannot write: opening it says so.
#[tokio::test]
async fn opening_a_read_only_database_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(open(&dir));
    std::fs::remove_file(dir.path().join("sluice.db-wal")).ok();
    std::fs::remove_file(dir.path().join("sluice.db-shm")).ok();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable_anyway = std::fs::OpenOptions::new().append(true).open(&path).is_ok();
    let result = (!writable_anyway).then(|| SqliteStore::open(&path).map(|_| ()));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    match result {
        None => eprintln!("skipped: permissions are not enforced here (running as root?)"),
        Some(result) => {
            let err = result.unwrap_err().to_string();
            eprintln!("read-only database: {err}");
            assert!(err.contains(&path.display().to_string()) && err.contains("writable"), "{err}");
        }
    }
}

#[tokio::test]
async fn the_runbook_recovery_query_shows_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("intercom")).await.unwrap();
    store.commit(run.id, &docs(&["a"]), &checkpoint(2)).await.unwrap();
    store.set_status(run.id, RunStatus::Stopped, None).await.unwrap();

    // Verbatim from the Intercom backfill runbook.
    let sql = "SELECT id, status, checkpoint, date_from, date_to
FROM pipeline_runs
ORDER BY id DESC
LIMIT 1;";
    let (id, status, checkpoint_json, from, to): (i64, String, String, String, String) =
        raw(&db(&dir)).query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).unwrap();
    assert_eq!((id, status.as_str(), from.as_str(), to.as_str()), (run.id, "stopped", "2025-01-01", "2025-03-31"));
    let value: serde_json::Value = serde_json::from_str(&checkpoint_json).unwrap();
    assert_eq!(value["phase"], "classification");
    assert_eq!(value["counts"]["fetched"], 100);
    assert_eq!(value["counts"]["stored"], 90);
    assert_eq!(value["partitions"]["main"]["cursor"], "cursor-2");
}

#[tokio::test]
async fn an_unreadable_checkpoint_is_an_error_naming_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let good = store.create_run(&new_run("p")).await.unwrap();
    let bad = store.create_run(&new_run("p")).await.unwrap();
    raw(&db(&dir))
        .execute("UPDATE pipeline_runs SET checkpoint = '{\"phase\": 3, oops' WHERE id = ?1", [bad.id])
        .unwrap();
    let err = store.get_run(bad.id).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", bad.id)) && err.contains("checkpoint"), "{err}");
    let err = store.list_runs(10).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", bad.id)), "{err}");
    assert!(store.get_run(good.id).await.unwrap().is_some(), "other runs still read");

    // The schema refuses an unknown status; if one gets in anyway, reading it is an error, not a panic.
    let conn = raw(&db(&dir));
    let set_paused = "UPDATE pipeline_runs SET status = 'paused' WHERE id = ?1";
    assert!(conn.execute(set_paused, [good.id]).is_err(), "CHECK constraint on status");
    conn.execute_batch("PRAGMA ignore_check_constraints = ON").unwrap();
    conn.execute(set_paused, [good.id]).unwrap();
    let err = store.get_run(good.id).await.unwrap_err().to_string();
    assert!(err.contains(&format!("run {}", good.id)) && err.contains("paused"), "{err}");
}

#[tokio::test]
async fn timestamps_match_sqlite_strftime() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    for secs in [0u64, 68_169_600, 951_782_400, 1_738_324_800, 4_107_542_399, 253_402_300_799] {
        let ours = sluice_connectors::store::rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        let theirs: String = conn
            .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1, 'unixepoch')", [secs as i64], |r| r.get(0))
            .unwrap();
        assert_eq!(ours, theirs, "{secs}");
    }
}

/// CPU seconds (user + system, all threads) this process used so far, on
/// Linux; `None` elsewhere. Wall time is noisy on a shared machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from after the name: 11 and 12.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn report(what: &str, docs: usize, batch: usize, started: Instant, cpu_started: Option<f64>) {
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_started.zip(cpu_seconds()).map(|(a, b)| b - a);
    let per_cpu = cpu.map_or(String::new(), |c| format!(", {c:.2}s CPU = {:.0} docs per CPU-second", docs as f64 / c));
    println!("{what}: {docs} docs in batches of {batch}: {wall:.2}s wall = {:.0} docs/s{per_cpu}", docs as f64 / wall);
}

/// Commit throughput, by hand:
/// `cargo test -p sluice-connectors --release --test sqlite_store -- --ignored --nocapture`
/// (`SLUICE_BENCH_BATCH=500` for another batch size, `SLUICE_BENCH_TEXT=2000` to
/// add that many bytes to each document's text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, run by hand"]
async fn commit_throughput() {
    const DOCS: usize = 200_000;
    let env = |key: &str, default: usize| std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let batch_size = env("SLUICE_BENCH_BATCH", 50);
    let pad = "x".repeat(env("SLUICE_BENCH_TEXT", 0));
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("bench")).await.unwrap();
    let batches: Vec<CommitBatch> = (0..DOCS / batch_size)
        .map(|b| CommitBatch {
            documents: (0..batch_size)
                .map(|i| {
                    let n = b * batch_size + i;
                    Document::from_record(
                        Record::new(
                            "bench",
                            format!("conv-{n:08}"),
                            format!("customer message number {n}: hello{pad}"),
                        )
                        .with_field("author", "user"),
                    )
                })
                .collect(),
            failures: vec![],
            memos: vec![],
        })
        .collect();
    let mut cp = checkpoint(0);
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for (i, batch) in batches.iter().enumerate() {
        cp.batches = i as u64 + 1;
        cp.counts.stored += batch_size as u64;
        store.commit(run.id, batch, &cp).await.unwrap();
    }
    report("insert", DOCS, batch_size, started, cpu);

    let (started, cpu) = (Instant::now(), cpu_seconds());
    for batch in &batches {
        store.commit(run.id, batch, &cp).await.unwrap();
    }
    report("re-upsert", DOCS, batch_size, started, cpu);
    assert_eq!(store.document_count().await.unwrap(), DOCS as u64);
    assert_eq!(store.get_document("bench", "conv-00000000").await.unwrap().unwrap().write_count, 2);
}

#[tokio::test]
async fn stage_results_are_found_only_for_the_same_content_and_fingerprint() {
    use sluice_core::{MemoEntry, MemoKey};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("memo.db")).unwrap();
    let run = store.create_run(&new_run("memo")).await.unwrap();
    let memo = |hash: &str, fingerprint: &str, label: &str| MemoEntry {
        source: "s".into(),
        id: "a".into(),
        stage: "classify".into(),
        fingerprint: fingerprint.into(),
        content_hash: hash.into(),
        value: serde_json::json!({ "category": label }),
    };
    let batch = CommitBatch { memos: vec![memo("h1", "model-a", "billing")], ..CommitBatch::default() };
    store.commit(run.id, &batch, &checkpoint(1)).await.unwrap();
    let key = |hash: &str| MemoKey { source: "s".into(), id: "a".into(), content_hash: hash.into() };
    let other = MemoKey { source: "s".into(), id: "zzz".into(), content_hash: "h1".into() };
    let found = store.memo_lookup("classify", "model-a", &[key("h1"), key("h2"), other]).await.unwrap();
    assert_eq!(found, vec![Some(serde_json::json!({ "category": "billing" })), None, None]);
    assert_eq!(store.memo_lookup("classify", "model-b", &[key("h1")]).await.unwrap(), vec![None]);
    assert_eq!(store.memo_lookup("embed", "model-a", &[key("h1")]).await.unwrap(), vec![None]);

    // A newer result for the same record replaces the old one.
    let batch = CommitBatch { memos: vec![memo("h2", "model-a", "bug")], ..CommitBatch::default() };
    store.commit(run.id, &batch, &checkpoint(2)).await.unwrap();
    assert_eq!(store.memo_lookup("classify", "model-a", &[key("h1")]).await.unwrap(), vec![None]);
    assert_eq!(
        store.memo_lookup("classify", "model-a", &[key("h2")]).await.unwrap(),
        vec![Some(serde_json::json!({ "category": "bug" }))]
    );
}
