//! Closed pipes, signals, panics and huge records with the real binary: a
//! reader that went away never panics or hangs a command, SIGHUP stops like
//! SIGTERM, one signal delivered twice (GNU `timeout` signals the child and
//! its group) counts once, a panicking stage fails the run, and a 50 MB line
//! is a failure while the records around it are stored.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

/// Waits for the child, killing it after a generous bound (a hang guard, not a timing test).
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run_status(db_path: &Path, run: i64) -> String {
    db(db_path).query_row("SELECT status FROM pipeline_runs WHERE id = ?1", [run], |r| r.get(0)).unwrap()
}

#[test]
fn a_run_with_stdout_and_stderr_closed_completes_and_read_commands_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("pipes.db");
    // `sluice run ... 2>&1 | head -3` once head has gone: both outputs closed.
    let child = sluice()
        .args(["run", "-q", "--json", "-c", "examples/sample.toml", "--db"])
        .arg(&db_path)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, "a run with closed outputs");
    assert_eq!(out.status.code(), Some(0), "the run completes and says so by its exit code");
    assert_eq!(run_status(&db_path, 1), "completed");
    assert!(count(&db(&db_path), "SELECT COUNT(*) FROM documents") > 0);

    for args in [vec!["runs"], vec!["status", "1"], vec!["runs", "--json"], vec!["status", "1", "--json"]] {
        let child = sluice()
            .args(&args)
            .arg("--db")
            .arg(&db_path)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(child, "a read command with stdout closed");
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: exits quietly like ripgrep\n{log}");
        assert!(!log.contains("panicked") && !log.contains("Broken pipe"), "{args:?}: {log}");
    }
}

#[test]
fn a_run_whose_stderr_reader_went_away_goes_on_with_a_true_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 600, 50, 0);
    let db_path = dir.path().join("stderr.db");
    // Plain progress lines and info logs all go to the closed stderr.
    let child = sluice()
        .args(["run", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .stdout(Stdio::piped())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, "a run with stderr closed");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(run_status(&db_path, 1), "completed");
    assert_eq!(count(&db(&db_path), "SELECT COUNT(*) FROM documents"), 600);
}

/// Starts a slow run and returns it once 3 batches are committed.
fn slow_run(dir: &Path) -> (Child, std::path::PathBuf) {
    let config = generate_pipeline(dir, 6_000, 50, 20);
    let db_path = dir.join("signals.db");
    let ev = dir.join("ev.jsonl");
    let child = sluice()
        .args(["run", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .arg("--events-out")
        .arg(&ev)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count_type(&events(&ev), "BatchCommitted") < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no commits");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, db_path)
}

fn signal(child: &Child, name: &str) {
    let kill = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
}

fn assert_stopped(out: &Output, db_path: &Path) {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(3), "a stopped run exits 3\n{log}");
    assert!(log.contains("in flight; a second signal aborts"), "says what a stop waits for: {log}");
    assert!(!log.contains("aborted"), "{log}");
    assert_eq!(run_status(db_path, 1), "stopped");
    let stored = count(&db(db_path), "SELECT COUNT(*) FROM documents");
    assert!(stored > 0 && stored < 6_000 && stored % 50 == 0, "whole batches only: {stored}");
}

#[test]
fn sighup_stops_at_a_batch_boundary_like_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, db_path) = slow_run(dir.path());
    signal(&child, "HUP");
    let out = wait_bounded(child, "a run after SIGHUP");
    assert_stopped(&out, &db_path);
}

#[test]
fn the_same_sigterm_twice_within_100_ms_stops_once_and_does_not_abort() {
    let dir = tempfile::tempdir().unwrap();
    let (child, db_path) = slow_run(dir.path());
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, "TERM");
    let out = wait_bounded(child, "a run after a double SIGTERM");
    assert_stopped(&out, &db_path);
}

/// A JSON-lines file of `records` short tickets, `r000` on; `extra` lines are
/// written after the first `at` of them.
fn tickets(path: &Path, records: usize, at: usize, extra: &str) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..records {
        if i == at {
            out.write_all(extra.as_bytes()).unwrap();
        }
        writeln!(out, r#"{{"id": "r{i:03}", "text": "Ticket {i}: I was charged twice and need a refund, please."}}"#)
            .unwrap();
    }
    out.flush().unwrap();
}

fn jsonl_pipeline(dir: &Path, data: &Path, stages: &str) -> std::path::PathBuf {
    let path = dir.join("records.toml");
    let text = format!(
        "name = \"records\"\nbatch_size = 10\n\n[source]\nkind = \"jsonl\"\npath = {:?}\n\n{stages}",
        data.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_panicking_stage_fails_the_run_with_its_message_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tickets.jsonl");
    tickets(&data, 200, 150, "{\"id\": \"bad\", \"text\": \"this one goes boom\"}\n");
    let stages = "[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"test_panic\"\ncontains = \"boom\"\n";
    let config = jsonl_pipeline(dir.path(), &data, stages);
    let db_path = dir.path().join("panic.db");
    let child = sluice()
        .args(["run", "-q", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, "a run whose stage panicked");
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1\n{log}");
    let conn = db(&db_path);
    let (status, error, checkpoint): (String, String, Option<String>) = conn
        .query_row("SELECT status, error, checkpoint FROM pipeline_runs WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("test_panic: record bad contains \"boom\""), "the panic message: {error}");
    assert!(log.contains("test_panic: record bad"), "said on stderr: {log}");
    // Batches of 10 commit in order; none from the panicking one (records 150-159) on.
    let stored = count(&conn, "SELECT COUNT(*) FROM documents");
    assert!(stored <= 150 && stored % 10 == 0, "whole batches before the panic: {stored}");
    if stored > 0 {
        let checkpoint: serde_json::Value = serde_json::from_str(&checkpoint.expect("a checkpoint")).unwrap();
        assert_eq!(checkpoint["counts"]["stored"], stored, "the checkpoint is what was committed");
    }
}

#[test]
fn a_50_mb_unbroken_line_among_good_records_is_a_failure_and_the_good_records_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("huge.jsonl");
    // A base64-like attachment: letters and digits, no space or punctuation.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let blob: String = (0..50 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect();
    tickets(&data, 10, 5, &format!("{{\"id\": \"huge\", \"text\": \"{blob}\"}}\n"));
    drop(blob);
    let stages = "[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"chunk\"\nsize = 200\n\n\
                  [[stages]]\nkind = \"embed\"\nprovider = \"hashing\"\ndimensions = 32\n";
    let config = jsonl_pipeline(dir.path(), &data, stages);
    let db_path = dir.path().join("huge.db");
    let child = sluice()
        .args(["run", "-q", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, "a run with a 50 MB line");
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(run_status(&db_path, 1), "completed");
    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 10, "the good records are stored");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE id = 'huge'"), 0);
    let (error_type, error, payload): (String, String, String) = conn
        .query_row("SELECT error_type, error, payload FROM failures WHERE record_id = 'huge'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("the huge record is a failure");
    assert_eq!(error_type, "record_too_large");
    assert!(error.contains("\"huge\"") && error.contains("max_record_bytes = 16777216"), "{error}");
    assert!(payload.len() < 64 * 1024, "the failures row keeps the record's head, not 50 MB: {}", payload.len());
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM failures"), 1);
}
