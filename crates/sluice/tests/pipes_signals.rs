//! Closed pipes and signals with the real binary: a reader that went away
//! never panics or hangs a command, SIGHUP stops like SIGTERM, and one
//! signal delivered twice (GNU `timeout` signals the child and its group)
//! counts once.

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
