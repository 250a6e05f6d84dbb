//! `sluice run --watch` on a real directory with the real binary: files
//! dropped in while it runs are stored (a file written in two parts once,
//! whole), a changed file is processed again and nothing else is, SIGINT ends
//! the run `stopped` (exit code 3) with its checkpoint, and a resume
//! processes nothing that was committed.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn pipeline(dir: &Path, docs: &Path) -> PathBuf {
    pipeline_with(dir, docs, "watch", "")
}

/// The pipeline file `NAME.toml` over `docs`, `source_extra` added to `[source]`.
fn pipeline_with(dir: &Path, docs: &Path, name: &str, source_extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    fs::write(
        &path,
        format!(
            r#"name = "watch"
batch_size = 10

[source]
kind = "files"
path = {docs:?}
debounce_ms = 600
rescan_ms = 1000
{source_extra}

[[stages]]
kind = "normalize"

[[stages]]
kind = "chunk"
by = "chars"
size = 40
overlap = 5

[[stages]]
kind = "embed"
dimensions = 16
"#,
            docs = docs.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path, db: impl AsRef<std::ffi::OsStr>, extra: &[&str], stderr: &Path) -> Child {
    sluice()
        .args(["run", "-c"])
        .arg(config)
        .arg("--db")
        .arg(db)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

/// `write_count` of a stored file, 0 while it is not stored.
fn writes(db: &Path, id: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn = common::db(db);
    conn.query_row("SELECT write_count FROM documents WHERE id = ?1", [id], |r| r.get(0)).unwrap_or(0)
}

fn text_of(db: &Path, id: &str) -> String {
    common::db(db).query_row("SELECT text FROM documents WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

/// Polls until `id` has been written `n` times, failing if the run ended first.
fn wait_writes(db: &Path, child: &mut Child, id: &str, n: i64) {
    let started = Instant::now();
    while writes(db, id) < n {
        assert!(child.try_wait().unwrap().is_none(), "sluice ended before {id} was written {n} times");
        assert!(started.elapsed() < DEADLINE, "{id} was not written {n} times (it has {})", writes(db, id));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt_and_wait(child: &mut Child) -> i32 {
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed by a signal");
        }
        assert!(started.elapsed() < DEADLINE, "sluice did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_picks_up_new_and_changed_files_stops_on_sigint_and_resumes_without_reprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    fs::create_dir_all(docs.join("sub")).unwrap();
    fs::write(docs.join("a.md"), "# Alpha\n\nThe first document, there before the watch starts.").unwrap();
    fs::write(docs.join("sub/b.txt"), "Bravo: the second document, in a subdirectory.").unwrap();
    let config = pipeline(dir.path(), &docs);
    let db = dir.path().join("watch.db");
    let log = dir.path().join("run1.log");
    let mut run =
        start(&config, &db, &["--watch", "--events-out", dir.path().join("e1.jsonl").to_str().unwrap()], &log);

    // The first pass.
    wait_writes(&db, &mut run, "a.md", 1);
    wait_writes(&db, &mut run, "sub/b.txt", 1);

    // Files landing while it runs, one of them written in two parts with a
    // pause shorter than the debounce: it is stored once, whole.
    fs::write(docs.join("c.txt"), "Charlie arrives while sluice is watching.").unwrap();
    let mut parts = fs::File::create(docs.join("d.md")).unwrap();
    parts.write_all(b"# Delta\n\nFirst part of a file written slowly, ").unwrap();
    parts.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    parts.write_all(b"and its second part.").unwrap();
    drop(parts);
    fs::write(docs.join("ignored.bin"), "not a listed extension").unwrap();
    wait_writes(&db, &mut run, "c.txt", 1);
    wait_writes(&db, &mut run, "d.md", 1);
    assert!(text_of(&db, "d.md").ends_with("and its second part."), "{}", text_of(&db, "d.md"));
    assert_eq!(writes(&db, "d.md"), 1, "a file written in parts is taken once, whole");

    // Rewrite a.md with the same bytes (its change time moves, its content
    // does not), then change b.txt. Files are taken in change order, so once
    // b.txt is stored again a.md has been looked at.
    fs::write(docs.join("a.md"), fs::read(docs.join("a.md")).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    fs::write(docs.join("sub/b.txt"), "Bravo, changed: this text is new.").unwrap();
    wait_writes(&db, &mut run, "sub/b.txt", 2);
    assert_eq!(text_of(&db, "sub/b.txt"), "Bravo, changed: this text is new.");
    for id in ["a.md", "c.txt", "d.md"] {
        assert_eq!(writes(&db, id), 1, "{id} did not change and was not processed again");
    }
    let conn = common::db(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 4, "ignored.bin is not a listed extension");
    assert!(count(&conn, "SELECT COUNT(*) FROM chunks") >= 4, "every document is chunked");
    drop(conn);

    // Ctrl-C: the run ends `stopped` (exit code 3) with its checkpoint.
    assert_eq!(interrupt_and_wait(&mut run), 3, "stopped runs exit with 3:\n{}", fs::read_to_string(&log).unwrap());
    let conn = common::db(&db);
    let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "stopped");
    let stored = count(&conn, "SELECT json_extract(checkpoint, '$.counts.stored') FROM pipeline_runs WHERE id = 1");
    assert_eq!(stored, 5, "4 files, one of them twice");
    drop(conn);
    let stderr = fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("run 1 stopped"), "{stderr}");
    // The live stats, as plain progress lines (stderr is not a terminal).
    let progress = stderr.lines().rfind(|l| l.starts_with("progress: ")).unwrap_or_else(|| panic!("{stderr}"));
    for stat in ["fetched=", "stored=", "chunks=", "embedded=", "failed="] {
        assert!(progress.contains(stat), "{progress}");
    }
    let events = events(&dir.path().join("e1.jsonl"));
    assert_eq!(events.last().unwrap()["type"], "RunFinished");
    assert_eq!(events.last().unwrap()["status"], "stopped");

    // Resume: it continues watching from its checkpoint. A file added now is
    // stored; it changed last, so every file before it has been looked at,
    // and none was processed again.
    let log = dir.path().join("run2.log");
    let mut resumed = start(&config, &db, &["--resume-run-id", "1"], &log);
    fs::write(docs.join("e.txt"), "Echo lands after the resume.").unwrap();
    wait_writes(&db, &mut resumed, "e.txt", 1);
    for (id, n) in [("a.md", 1), ("sub/b.txt", 2), ("c.txt", 1), ("d.md", 1)] {
        assert_eq!(writes(&db, id), n, "{id} was committed before the stop and not processed again");
    }
    assert_eq!(interrupt_and_wait(&mut resumed), 3, "{}", fs::read_to_string(&log).unwrap());
    let conn = common::db(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM pipeline_runs"), 1, "the resume continued run 1");
    let stored = count(&conn, "SELECT json_extract(checkpoint, '$.counts.stored') FROM pipeline_runs WHERE id = 1");
    assert_eq!(stored, 6, "counts are cumulative across the resume");
}

#[test]
fn watch_refuses_sources_that_cannot_be_watched_and_batch_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 10, 5, 0);
    let out =
        sluice().args(["run", "--watch", "-c"]).arg(&config).arg("--db").arg(dir.path().join("x.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--watch needs a files source"), "{}", stderr(&out));

    let docs = dir.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    let config = pipeline(dir.path(), &docs);
    let out = sluice()
        .args(["run", "--watch", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .env("PIPELINE_MODE", "batch")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("watch = true needs mode = streaming"), "{}", stderr(&out));
}

/// The files the deletion tests start with.
const FILES: [(&str, &str); 3] = [
    ("a.md", "# Alpha\n\nThe first document, it stays as it is."),
    ("b.txt", "Bravo: the second document, deleted later on."),
    ("c.txt", "Charlie: the third document, changed later on."),
];

fn docs_dir(dir: &Path) -> PathBuf {
    let docs = dir.join("docs");
    fs::create_dir_all(&docs).unwrap();
    for (name, text) in FILES {
        fs::write(docs.join(name), text).unwrap();
    }
    docs
}

fn writes_in(db: &TestDb, id: &str) -> Option<i64> {
    db.scalar(&format!("SELECT write_count FROM documents WHERE id = '{id}'"))
}

fn chunks_of(db: &TestDb, id: &str) -> i64 {
    db.scalar(&format!("SELECT count(*) FROM chunks WHERE doc_id = '{id}'")).unwrap_or(0)
}

/// A count of a run's summary (zeros are left out of it).
fn n(counts: &serde_json::Value, key: &str) -> i64 {
    counts[key].as_i64().unwrap_or(0)
}

fn marked(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM deleted_documents").unwrap_or(0)
}

#[test]
fn files_runs_mark_or_remove_deleted_files_and_leave_unchanged_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    files_runs(dir.path(), TestDb::sqlite(dir.path()));
}

#[test]
fn postgres_files_runs_mark_or_remove_deleted_files_and_leave_unchanged_ones_alone() {
    let Some(db) = TestDb::postgres() else {
        eprintln!("skipped: set SLUICE_TEST_POSTGRES_URL to run the PostgreSQL files test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    files_runs(dir.path(), db);
}

/// `sluice run` (no watch), a new run each time, over one directory.
fn files_runs(dir: &Path, db: TestDb) {
    let docs = docs_dir(dir);
    let mark = pipeline_with(dir, &docs, "mark", r#"on_delete = "mark""#);
    let remove = pipeline_with(dir, &docs, "remove", r#"on_delete = "remove""#);
    let run = |config: &Path| {
        let out = run_ok(sluice().args(["run", "--json", "-c"]).arg(config).arg("--db").arg(db.arg()));
        let summary = json_stdout(&out);
        assert_eq!(summary["status"], "completed", "{summary}");
        (summary["counts"].clone(), summary["run_id"].as_i64().unwrap(), stderr(&out))
    };

    let (counts, _, _) = run(&mark);
    assert_eq!(counts["stored"], 3, "{counts}");
    let chunks_c = chunks_of(&db, "c.txt");
    assert!(chunks_of(&db, "a.md") > 0 && chunks_of(&db, "b.txt") > 0 && chunks_c > 0);

    // Run again over the same files: the store's content hashes say nothing changed.
    let (counts, _, _) = run(&mark);
    assert_eq!((n(&counts, "stored"), n(&counts, "unchanged")), (0, 3), "{counts}");
    for (id, _) in FILES {
        assert_eq!(writes_in(&db, id), Some(1), "{id} is unchanged and not written again");
    }

    // b.txt deleted, c.txt changed: b is marked (its row and chunks kept), c written again, a left alone.
    let b_modified = fs::metadata(docs.join("b.txt")).unwrap().modified().unwrap();
    fs::remove_file(docs.join("b.txt")).unwrap();
    fs::write(docs.join("c.txt"), "Charlie, changed: a new text for the third document.").unwrap();
    let (counts, run_id, log) = run(&mark);
    assert_eq!(counts["deleted"], 1, "{counts}");
    assert_eq!(counts["stored"], 1, "{counts}");
    assert_eq!(counts["unchanged"], 1, "{counts}");
    assert!(log.contains("deleted=1"), "the final line says so:\n{log}");
    assert_eq!(db.text("SELECT id FROM deleted_documents").as_deref(), Some("b.txt"));
    assert_eq!(db.scalar("SELECT run_id FROM deleted_documents"), Some(run_id));
    assert_eq!(writes_in(&db, "b.txt"), Some(1), "a marked document keeps its row");
    assert!(chunks_of(&db, "b.txt") > 0, "and its chunks");
    assert_eq!((writes_in(&db, "a.md"), writes_in(&db, "c.txt")), (Some(1), Some(2)));
    let status = json_stdout(&run_ok(sluice().args(["status", &run_id.to_string(), "--json", "--db"]).arg(db.arg())));
    assert_eq!(status["counts"]["deleted"], 1, "{status}");

    // Again: the file is still gone, but it was marked already; nothing is counted or written.
    let (counts, _, _) = run(&mark);
    assert_eq!((n(&counts, "deleted"), n(&counts, "stored")), (0, 0), "{counts}");
    assert_eq!(marked(&db), 1);

    // b.txt back as it was, bytes and mtime (moved back, restored from a
    // backup): its content hash is the stored one, yet it is stored again
    // (not skipped as unchanged) and no longer marked.
    fs::write(docs.join("b.txt"), FILES[1].1).unwrap();
    fs::File::options().write(true).open(docs.join("b.txt")).unwrap().set_modified(b_modified).unwrap();
    let (counts, _, _) = run(&mark);
    assert_eq!((n(&counts, "stored"), n(&counts, "unchanged")), (1, 2), "{counts}");
    assert_eq!((marked(&db), writes_in(&db, "b.txt")), (0, Some(2)));
    fs::remove_file(docs.join("b.txt")).unwrap();
    let (counts, _, _) = run(&mark);
    assert_eq!(counts["deleted"], 1, "{counts}");
    assert_eq!(marked(&db), 1);

    // Now remove: the document marked before goes, and so does a.md, deleted now, with their chunks.
    fs::remove_file(docs.join("a.md")).unwrap();
    let (counts, _, log) = run(&remove);
    assert_eq!(counts["deleted"], 2, "{counts}");
    assert!(log.contains("deleted=2"), "{log}");
    assert_eq!((writes_in(&db, "a.md"), writes_in(&db, "b.txt")), (None, None), "removed");
    assert_eq!(chunks_of(&db, "a.md") + chunks_of(&db, "b.txt"), 0, "their chunks went with them");
    assert_eq!(marked(&db), 0, "no tombstone is left");
    assert_eq!(writes_in(&db, "c.txt"), Some(2), "c.txt untouched");
    assert!(chunks_of(&db, "c.txt") > 0);
    assert_eq!(db.scalar("SELECT count(*) FROM documents"), Some(1));

    // And again: nothing left to remove.
    let (counts, _, _) = run(&remove);
    assert_eq!((n(&counts, "deleted"), n(&counts, "stored")), (0, 0), "{counts}");
    db.cleanup();
}

/// Polls until `sql` (one integer) reaches `n`, failing if the run ended first.
fn wait_for(db: &TestDb, child: &mut Child, sql: &str, n: i64) {
    let started = Instant::now();
    loop {
        let now = if db.has_runs() { db.scalar(sql).unwrap_or(0) } else { 0 };
        if now >= n {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "sluice ended before `{sql}` reached {n}");
        assert!(started.elapsed() < DEADLINE, "`{sql}` did not reach {n} (it is {now})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoint_count(db: &TestDb, run: i64, key: &str) -> i64 {
    let sql = match db {
        TestDb::Sqlite(_) => {
            format!("SELECT json_extract(checkpoint, '$.counts.{key}') FROM pipeline_runs WHERE id = {run}")
        }
        TestDb::Postgres { .. } => {
            format!("SELECT (checkpoint->'counts'->>'{key}')::bigint FROM pipeline_runs WHERE id = {run}")
        }
    };
    db.scalar(&sql).unwrap_or(0)
}

#[test]
fn watch_marks_or_removes_deleted_files_and_remembers_content_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    watch_deletes(dir.path(), TestDb::sqlite(dir.path()));
}

#[test]
fn postgres_watch_marks_or_removes_deleted_files_and_remembers_content_across_restarts() {
    let Some(db) = TestDb::postgres() else {
        eprintln!("skipped: set SLUICE_TEST_POSTGRES_URL to run the PostgreSQL watch test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    watch_deletes(dir.path(), db);
}

/// `sluice run --watch`, stopped and started again (a new run, not a resume).
fn watch_deletes(dir: &Path, db: TestDb) {
    let docs = docs_dir(dir);
    let mark = pipeline_with(dir, &docs, "mark", r#"on_delete = "mark""#);
    let remove = pipeline_with(dir, &docs, "remove", r#"on_delete = "remove""#);
    let writes = |id: &str| format!("SELECT write_count FROM documents WHERE id = '{id}'");

    // The first watch: every file stored, then b.txt deleted while it watches.
    let log = dir.join("w1.log");
    let mut watch = start(&mark, db.arg(), &["--watch"], &log);
    for (id, _) in FILES {
        wait_for(&db, &mut watch, &writes(id), 1);
    }
    fs::remove_file(docs.join("b.txt")).unwrap();
    wait_for(&db, &mut watch, "SELECT count(*) FROM deleted_documents", 1);
    assert_eq!(db.text("SELECT id FROM deleted_documents").as_deref(), Some("b.txt"));
    assert_eq!(writes_in(&db, "b.txt"), Some(1), "a marked document keeps its row");
    assert!(chunks_of(&db, "b.txt") > 0, "and its chunks");
    assert_eq!(interrupt_and_wait(&mut watch), 3, "{}", fs::read_to_string(&log).unwrap());
    db.settle();
    assert_eq!(checkpoint_count(&db, 1, "deleted"), 1);
    assert_eq!(checkpoint_count(&db, 1, "stored"), 3);
    assert!(fs::read_to_string(&log).unwrap().contains("deleted=1"), "{}", fs::read_to_string(&log).unwrap());

    // A new watch over the same files: the content hashes survived the
    // restart, so a.md and c.txt are not processed again and b.txt is not
    // counted deleted again. c.txt changed while it watches is stored again;
    // files are taken in change order, so by then every other was looked at.
    let log = dir.join("w2.log");
    let mut watch = start(&mark, db.arg(), &["--watch"], &log);
    wait_for(&db, &mut watch, "SELECT count(*) FROM pipeline_runs WHERE id = 2", 1);
    std::thread::sleep(Duration::from_millis(300));
    fs::write(docs.join("c.txt"), "Charlie, changed while the second watch runs.").unwrap();
    wait_for(&db, &mut watch, &writes("c.txt"), 2);
    assert_eq!(writes_in(&db, "a.md"), Some(1), "a.md is unchanged and not processed again");
    assert_eq!(interrupt_and_wait(&mut watch), 3, "{}", fs::read_to_string(&log).unwrap());
    db.settle();
    assert_eq!(checkpoint_count(&db, 2, "stored"), 1, "only the changed file");
    assert_eq!(checkpoint_count(&db, 2, "deleted"), 0, "b.txt was marked by the first watch");
    assert_eq!(marked(&db), 1);

    // A watch that removes: the document marked before goes, and so does
    // a.md deleted while it watches; c.txt is left alone.
    let log = dir.join("w3.log");
    let mut watch = start(&remove, db.arg(), &["--watch"], &log);
    wait_for(&db, &mut watch, "SELECT count(*) FROM pipeline_runs WHERE id = 3", 1);
    fs::remove_file(docs.join("a.md")).unwrap();
    let gone = "SELECT 2 - count(*) FROM documents WHERE id IN ('a.md', 'b.txt')";
    wait_for(&db, &mut watch, gone, 2);
    assert_eq!(interrupt_and_wait(&mut watch), 3, "{}", fs::read_to_string(&log).unwrap());
    db.settle();
    assert_eq!(chunks_of(&db, "a.md") + chunks_of(&db, "b.txt"), 0, "their chunks went with them");
    assert_eq!(marked(&db), 0, "no tombstone is left");
    assert_eq!(writes_in(&db, "c.txt"), Some(2), "c.txt untouched");
    assert_eq!(checkpoint_count(&db, 3, "deleted"), 2);
    assert_eq!(checkpoint_count(&db, 3, "stored"), 0);
    db.cleanup();
}
