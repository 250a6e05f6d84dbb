//! `examples/csv.toml` run by the real binary on `examples/data/*.csv`: the
//! stored documents, the two bad rows as failures with file:line, the
//! repeated id upserted, and a stop with SIGINT resumed by row.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const NOVEMBER: &str = "examples/data/tickets-2025-11.csv";

#[test]
fn the_csv_example_stores_every_good_row_and_records_the_bad_ones_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("csv.db");
    let out = run_ok(sluice().args(["run", "-q", "--json", "-c", "examples/csv.toml", "--db"]).arg(&db_path));
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed", "{}", stderr(&out));
    assert_eq!(summary["counts"]["failed"], 2);
    assert_eq!(summary["counts"]["fetched"], 17, "12 rows in November, 5 in December");

    let conn = db(&db_path);
    // 15 good rows, one of them a later version of C-2002.
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 14);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE source <> 'tickets_csv'"), 0);
    let doc = |id: &str| -> (String, String, Option<i64>, String, i64) {
        conn.query_row(
            "SELECT text, fields, updated_at, category, write_count FROM documents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"))
    };

    let (text, fields, updated_at, category, _) = doc("C-2003");
    assert!(text.starts_with("App crashes on export"), "{text}");
    assert!(text.contains("click \"Export, as CSV\""), "quotes and the comma inside them: {text}");
    assert!(text.contains("It worked last week."), "the embedded newlines are part of the field: {text}");
    assert_eq!(category, "bug");
    let fields: serde_json::Value = serde_json::from_str(&fields).unwrap();
    assert_eq!(fields, serde_json::json!({"channel": "web", "customer": "c103"}), "other columns, as strings");
    assert_eq!(updated_at, Some(1_762_243_500), "2025-11-04T08:05:00Z");

    // The repeated id: upserted by (source, id), the later row is kept.
    let (text, _, updated_at, _, writes) = doc("C-2002");
    assert!(text.contains("arrived in spam"), "{text}");
    assert_eq!(updated_at, Some(1_763_026_200), "2025-11-13T09:30:00Z");
    assert_eq!(writes, 2);

    // December: a BOM before the header and CRLF line ends.
    let (text, fields, _, category, _) = doc("C-2101");
    assert_eq!(category, "billing");
    assert!(!text.contains('\r'), "{text:?}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&fields).unwrap()["channel"], "web");
    assert!(doc("C-2105").0.contains("löschen"));

    let failures = json_stdout(&run_ok(sluice().args(["failures", "1", "--json", "--db"]).arg(&db_path)));
    let failures = failures.as_array().unwrap();
    let mut located: Vec<(String, String)> = failures
        .iter()
        .map(|f| (f["record_id"].as_str().unwrap().to_string(), f["error_type"].as_str().unwrap_or("").to_string()))
        .collect();
    located.sort();
    assert_eq!(
        located,
        [(format!("{NOVEMBER}:13"), "parse".to_string()), (format!("{NOVEMBER}:16"), "missing_field".to_string())],
        "{failures:?}"
    );
    assert!(failures.iter().all(|f| f["stage"] == "source"), "{failures:?}");
    let missing_column = failures.iter().find(|f| f["record_id"].as_str().unwrap().ends_with(":13")).unwrap();
    assert!(missing_column["payload"].as_str().unwrap().contains("this row has a missing column"), "{missing_column}");
}

/// Copies the example and its data into `root`, with one more, larger file for the glob.
fn example_copy(root: &Path, bulk_rows: usize) {
    let repo = repo_root();
    std::fs::create_dir_all(root.join("examples/data")).unwrap();
    std::fs::copy(repo.join("examples/csv.toml"), root.join("examples/csv.toml")).unwrap();
    for file in ["tickets-2025-11.csv", "tickets-2025-12.csv"] {
        std::fs::copy(repo.join("examples/data").join(file), root.join("examples/data").join(file)).unwrap();
    }
    let mut bulk = String::from("ticket_id,channel,customer,subject,body,updated_at\n");
    for i in 0..bulk_rows {
        bulk.push_str(&format!(
            "B-{i:05},web,c{:03},Ticket {i},\"Line one of {i}\nline two: the invoice, again\",{}\n",
            i % 500,
            1_764_000_000 + i
        ));
    }
    std::fs::write(root.join("examples/data/tickets-bulk.csv"), bulk).unwrap();
}

#[test]
fn a_stopped_csv_run_resumes_by_row_and_writes_each_row_once() {
    const BULK: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    example_copy(dir.path(), BULK as usize);
    let db_path = dir.path().join("stop.db");
    let ev = dir.path().join("ev.jsonl");
    let child = sluice()
        .current_dir(dir.path())
        .args(["run", "-c", "examples/csv.toml", "--db"])
        .arg(&db_path)
        .arg("--events-out")
        .arg(&ev)
        .env("PIPELINE_STREAMING_BATCH_SIZE", "10")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count_type(&events(&ev), "BatchCommitted") < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no commits");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a stopped run exits 3\n{}", stderr(&out));
    let conn = db(&db_path);
    let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "stopped");
    let stored = count(&conn, "SELECT COUNT(*) FROM documents");
    assert!(stored > 0 && stored < 14 + BULK, "stopped part way: {stored}");

    run_ok(
        sluice()
            .current_dir(dir.path())
            .args(["run", "-q", "--resume", "-c", "examples/csv.toml", "--db"])
            .arg(&db_path)
            .env("PIPELINE_STREAMING_BATCH_SIZE", "10"),
    );
    let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "completed", "the resume continued run 1");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 14 + BULK);
    assert_eq!(
        count(&conn, "SELECT SUM(write_count) FROM documents"),
        15 + BULK,
        "every good row written once (C-2002 twice, as two rows), none again after the resume"
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM failures"), 2, "each bad row recorded once");
    let text: String = conn.query_row("SELECT text FROM documents WHERE id = 'B-19999'", [], |r| r.get(0)).unwrap();
    assert!(text.contains("Line one of 19999"), "{text}");
}
