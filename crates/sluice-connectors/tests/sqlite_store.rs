//! What only the SQLite store has: files, WAL, the lock file, busy
//! timeouts, and the errors a user meets opening a path. The behaviours
//! every store shares are in `store_suite/`, run against SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_connectors::store::{InspectStore, SqliteConfig, SqliteStore, StoreKind, embedding_to_bytes};
use sluice_core::store::{CommitBatch, NewRun, Store};
use sluice_core::{Checkpoint, Document, Position, Record, StoreError};

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
        window: Some(sluice_core::RunWindow { from: "2025-01-01".into(), to: "2025-03-31".into() }),
    }
}

fn doc(id: &str, text: &str) -> Document {
    Document::from_record(Record::new("src", id, text).with_field("title", format!("title {id}")))
}

fn docs(ids: &[&str]) -> CommitBatch {
    CommitBatch {
        documents: ids.iter().map(|id| doc(id, &format!("text of {id}"))).collect(),
        ..CommitBatch::default()
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
    assert_eq!(numbers, vec![1, 2, 3, 4, 6, 8], "each migration applied once (5 and 9 are PostgreSQL only)");
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

/// SQLite keeps embeddings as little-endian f32 BLOBs and the record's time as an integer.
#[tokio::test]
async fn embeddings_are_little_endian_f32_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let run = store.create_run(&new_run("p")).await.unwrap();
    let mut d = doc("b", "b");
    d.embedding = Some(vec![0.25, -1.0, 3.5]);
    d.record.updated_at = Some(1_700_000_000);
    store.commit(run.id, &CommitBatch { documents: vec![d], ..CommitBatch::default() }, &checkpoint(1)).await.unwrap();
    let conn = raw(&db(&dir));
    let blob: Vec<u8> = conn.query_row("SELECT embedding FROM documents WHERE id = 'b'", [], |r| r.get(0)).unwrap();
    assert_eq!(blob, embedding_to_bytes(&[0.25, -1.0, 3.5]), "embedding is little-endian f32");
    let updated: i64 = conn.query_row("SELECT updated_at FROM documents WHERE id = 'b'", [], |r| r.get(0)).unwrap();
    assert_eq!(updated, 1_700_000_000);
    assert!(store.lock_path().ends_with("sluice.db.lock"));
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
            ..CommitBatch::default()
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
