//! The `sluice` binary as a user runs it: the sample pipeline, status output
//! against the checkpoint, both modes, stopping with a signal, and bad input.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn run_sample(db_path: &Path, mode: &str) -> std::process::Output {
    run_ok(
        sluice()
            .args(["run", "-q", "--json", "-c", "examples/sample.toml", "--db"])
            .arg(db_path)
            .env("PIPELINE_MODE", mode),
    )
}

#[test]
fn sample_pipeline_runs_and_status_agrees_with_checkpoint_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("s.db");
    let events_path = dir.path().join("events.jsonl");
    let out = run_ok(
        sluice()
            .args(["run", "-c", "examples/sample.toml", "--json", "--db"])
            .arg(&db_path)
            .arg("--events-out")
            .arg(&events_path),
    );
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed");
    let log = stderr(&out);
    assert!(log.contains("Processing batch 1: 50 records"), "{log}");
    assert!(log.contains("Batch 1 complete: classified="), "{log}");

    let conn = db(&db_path);
    let stored = count(&conn, "SELECT COUNT(*) FROM documents");
    let filtered = summary["counts"]["filtered"].as_i64().unwrap();
    assert!(filtered > 0, "the sample has tickets too short to keep");
    assert_eq!(stored + filtered, 400);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE category IS NULL"), 0);
    assert!(count(&conn, "SELECT COUNT(*) FROM chunks WHERE embedding IS NOT NULL") >= stored);

    let status = json_stdout(&run_ok(sluice().args(["status", "1", "--json", "--db"]).arg(&db_path)));
    assert_eq!(status["status"], "completed");
    assert_eq!(status["run_id"], 1);
    for (field, counter) in [
        ("conversations_fetched", "fetched"),
        ("conversations_filtered", "filtered"),
        ("conversations_classified", "classified"),
        ("conversations_stored", "stored"),
    ] {
        assert_eq!(status[field], status["checkpoint"]["counts"][counter], "{field} vs checkpoint.counts.{counter}");
    }
    assert_eq!(status["conversations_stored"].as_i64().unwrap(), stored);
    // The runbook's recovery query works as written.
    let (id, st, cp): (i64, String, String) = conn
        .query_row(
            "SELECT id, status, checkpoint, date_from, date_to FROM pipeline_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((id, st.as_str()), (1, "completed"));
    let cp: serde_json::Value = serde_json::from_str(&cp).unwrap();
    assert_eq!(cp["counts"]["stored"].as_i64().unwrap(), stored);

    let replay = json_stdout(&run_ok(sluice().args(["events", "--json"]).arg(&events_path)));
    assert_eq!(replay["status"], "completed");
    assert_eq!(replay["counts"], status["counts"]);
    assert_eq!(replay["by_type"]["DocumentCompleted"].as_i64().unwrap(), stored);

    let runs = json_stdout(&run_ok(sluice().args(["runs", "--json", "--db"]).arg(&db_path)));
    assert_eq!(runs.as_array().unwrap().len(), 1);

    // Running again over unchanged data: every document skipped, none written again.
    let again = json_stdout(&run_sample(&db_path, "streaming"));
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), stored);
    assert_eq!(count(&conn, "SELECT MAX(write_count) FROM documents"), 1);
    assert_eq!((again["counts"]["stored"].as_i64(), again["counts"]["unchanged"].as_i64()), (Some(0), Some(stored)));
}

#[test]
fn both_modes_store_identical_documents_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("streaming.db"), dir.path().join("batch.db"));
    run_sample(&a, "streaming");
    run_sample(&b, "batch");
    let dump = |path: &Path, sql: &str| -> Vec<String> {
        let conn = db(path);
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| {
                let n = r.as_ref().column_count();
                let mut cols = Vec::new();
                for i in 0..n {
                    cols.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(cols.join("|"))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let docs = "SELECT source, id, text, fields, updated_at, content_hash, category, classification, embedding FROM documents ORDER BY source, id";
    let chunks = "SELECT source, doc_id, idx, byte_offset, text, embedding FROM chunks ORDER BY source, doc_id, idx";
    let (da, db_) = (dump(&a, docs), dump(&b, docs));
    assert!(!da.is_empty());
    assert_eq!(da, db_, "documents differ between modes");
    let (ca, cb) = (dump(&a, chunks), dump(&b, chunks));
    assert!(ca.len() > da.len(), "the sample's tickets are chunked");
    assert_eq!(ca, cb, "chunks differ between modes");
}

#[test]
fn sigint_stops_at_a_batch_boundary_and_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 6_000, 50, 20);
    let db_path = dir.path().join("stop.db");
    let ev = dir.path().join("ev.jsonl");
    let child = sluice()
        .args(["run", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .arg("--events-out")
        .arg(&ev)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count_type(&events(&ev), "BatchCommitted") < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no commits");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a stopped run exits 3\n{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("Stop signal at batch boundary"), "{log}");
    let conn = db(&db_path);
    let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "stopped");
    let stored = count(&conn, "SELECT COUNT(*) FROM documents");
    assert!(stored > 0 && stored < 6_000 && stored % 50 == 0, "whole batches only: {stored}");

    run_ok(sluice().args(["run", "-q", "--resume", "-c"]).arg(&config).arg("--db").arg(&db_path));
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 6_000);
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), 6_000);
    let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "completed", "the resume continued run 1");
}

#[test]
fn malformed_jsonl_line_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.jsonl");
    let mut lines: Vec<String> =
        (0..30).map(|i| format!(r#"{{"id": {i}, "text": "record {i} has enough text to keep"}}"#)).collect();
    lines[12] = r#"{"id": 12, "text": "unterminated"#.to_string();
    lines[20] = r#"{"text": "no id here"}"#.to_string();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!("batch_size = 10\n[source]\nkind = \"jsonl\"\npath = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let db_path = dir.path().join("m.db");
    let summary =
        json_stdout(&run_ok(sluice().args(["run", "-q", "--json", "-c"]).arg(&config).arg("--db").arg(&db_path)));
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["counts"]["failed"], 2);
    assert_eq!(summary["counts"]["stored"], 28);
    let failures = json_stdout(&run_ok(sluice().args(["failures", "1", "--json", "--db"]).arg(&db_path)));
    let failures = failures.as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(failures[0]["record_id"].as_str().unwrap().ends_with(":13"), "line numbers are 1-based: {failures:?}");
    assert_eq!(failures[0]["stage"], "source");
    assert!(failures[0]["payload"].as_str().unwrap().contains("unterminated"));
}

#[test]
fn bad_configuration_is_refused_with_key_value_and_range_and_nothing_stored_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("keep.db");
    run_sample(&db_path, "streaming");
    let conn = db(&db_path);
    let before = count(&conn, "SELECT COUNT(*) FROM documents");
    let runs_before = count(&conn, "SELECT COUNT(*) FROM pipeline_runs");

    // (environment, pipeline file, expected message)
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("PIPELINE_STREAMING_BATCH_SIZE", "5")],
            "examples/sample.toml".into(),
            "PIPELINE_STREAMING_BATCH_SIZE=5 is out of range (allowed: 10-500)",
        ),
        (vec![("PIPELINE_STREAMING_BATCH_SIZE", "many")], "examples/sample.toml".into(), "not a whole number"),
        (
            vec![("PIPELINE_MODE", "turbo")],
            "examples/sample.toml".into(),
            "PIPELINE_MODE=turbo is not a mode (allowed: streaming, batch)",
        ),
        (vec![], dir.path().join("missing.toml").display().to_string(), "cannot read pipeline file"),
    ];
    for (env, config, needle) in cases {
        let mut cmd = sluice();
        cmd.args(["run", "-q", "-c", &config, "--db"]).arg(&db_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "expected {needle:?} in {}", stderr(&out));
    }

    let bad_files = [
        (
            "batch_size = 1000\n[source]\nkind = \"generate\"\ncount = 1\n",
            "batch_size = 1000 is out of range (allowed: 10-500)",
        ),
        (
            "phase_ranges = 0\n[source]\nkind = \"generate\"\ncount = 1\n",
            "phase_ranges = 0 is out of range (allowed: 1-1024)",
        ),
        ("[source]\nkind = \"generate\"\ncount = 1\nbogus = 1\n", "bogus"),
        ("[source]\nkind = \"teleport\"\n", "teleport"),
        ("[source]\nkind = \"jsonl\"\npath = \"/no/such/file.jsonl\"\n", "/no/such/file.jsonl"),
        (
            "[source]\nkind = \"generate\"\ncount = 10\n[[stages]]\nkind = \"chunk\"\nsize = 100\noverlap = 200\n",
            "overlap",
        ),
        ("[source\nkind = 1", "line 1"),
    ];
    for (i, (text, needle)) in bad_files.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = sluice().args(["run", "-q", "-c"]).arg(&path).arg("--db").arg(&db_path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(err.contains(&path.display().to_string()) || i >= 3, "names the file: {err}");
    }
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), before, "nothing stored was lost");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM pipeline_runs"), runs_before, "no run was created");
}

#[test]
fn an_unwritable_store_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/x.db");
    let out = sluice().args(["run", "-q", "-c", "examples/sample.toml", "--db"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing.display().to_string()), "{}", stderr(&out));

    let events_dir = dir.path().join("a-directory");
    std::fs::create_dir(&events_dir).unwrap();
    let out = sluice()
        .args(["run", "-q", "-c", "examples/sample.toml", "--db"])
        .arg(dir.path().join("ok.db"))
        .arg("--events-out")
        .arg(&events_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot write events file"), "{}", stderr(&out));
}

#[test]
fn unknown_run_and_unreadable_events_file_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("e.db");
    // A store with a run in it (read-only commands refuse a store that does not exist).
    run_ok(sluice().args(["run", "-q", "-c"]).arg(generate_pipeline(dir.path(), 10, 10, 0)).arg("--db").arg(&db_path));
    let out = sluice().args(["status", "42", "--db"]).arg(&db_path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run 42 not found"), "{}", stderr(&out));
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\n").unwrap();
    let out = sluice().args(["events"]).arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an events log"), "{}", stderr(&out));
}
