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
    let path = dir.join("watch.toml");
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

fn start(config: &Path, db: &Path, extra: &[&str], stderr: &Path) -> Child {
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
