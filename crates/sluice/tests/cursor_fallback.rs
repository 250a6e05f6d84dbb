//! Any rejected cursor restarts its partition (issue 11, item 5): the fake
//! Intercom answers an expired cursor with the bare 400 the real one also
//! gives (`{"type":"error.list","errors":[{"code":"parameter_invalid",
//! "message":"Invalid request"}]}`), and the run, or a resume from a
//! checkpoint whose cursor has expired, restarts the partition and completes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use sluice_testkit::intercom::IntercomTarget;
use sluice_testkit::{FakeIntercom, IntercomConfig, IntercomFaults};

/// December 2025 (UTC), the range of the pipeline, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;

async fn fake(conversations: usize) -> FakeIntercom {
    let faults = IntercomFaults {
        endpoints: IntercomTarget::Search,
        latency_ms: 40,
        generic_cursor_errors: true,
        ..IntercomFaults::default()
    };
    let config = IntercomConfig::default().with_conversations(conversations).with_days(45).with_faults(faults);
    FakeIntercom::start(config).await.expect("fake intercom starts")
}

/// Ids in the range that pass the quality filter.
fn expected(fake: &FakeIntercom) -> BTreeSet<String> {
    let ds = fake.dataset();
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    ds.ids_in_range(START, END).into_iter().filter(|id| !short.contains(id)).collect()
}

fn pipeline(dir: &Path) -> PathBuf {
    let path = dir.join("cursor.toml");
    std::fs::write(
        &path,
        "name = \"cursor\"\nbatch_size = 20\n[source]\nkind = \"intercom\"\ndate_from = \"2025-12-01\"\n\
         date_to = \"2025-12-31\"\nper_page = 20\n\n[[stages]]\nkind = \"normalize\"\n",
    )
    .unwrap();
    path
}

fn sluice_for(intercom: &FakeIntercom) -> std::process::Command {
    let mut cmd = sluice();
    cmd.env("INTERCOM_BASE_URL", intercom.base_url())
        .env("INTERCOM_ACCESS_TOKEN", intercom.token())
        .env("SLUICE_LOG", "info");
    cmd
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "sluice failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stored_ids(db_path: &Path) -> BTreeSet<String> {
    let conn = db(db_path);
    let mut stmt = conn.prepare("SELECT id FROM documents").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

async fn wait_for_pages(intercom: &FakeIntercom, pages: u64) {
    let started = Instant::now();
    while intercom.counters().pages_served < pages {
        assert!(started.elapsed() < Duration::from_secs(120), "the backfill does not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The log and events say what happened: the API's message, the restart, one event.
fn assert_fell_back(log: &str, events_path: &Path) {
    assert!(log.contains("parameter_invalid: Invalid request"), "the API's message is in the log: {log}");
    assert!(log.contains("Cursor invalid on resume, restarted from beginning"), "{log}");
    assert_eq!(count_type(&events(events_path), "CursorFallback"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_400_to_a_cursor_restarts_the_partition_and_the_run_completes() {
    let intercom = fake(1_200).await;
    let quality = expected(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let db_path = dir.path().join("run.db");
    let events_path = dir.path().join("events.jsonl");
    let mut cmd = sluice_for(&intercom);
    cmd.args(["run", "-q", "--json", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .arg("--events-out")
        .arg(&events_path);
    let run = tokio::spawn(output(cmd));
    wait_for_pages(&intercom, 3).await;
    intercom.invalidate_cursors();
    let out = ok(run.await.unwrap());
    assert_eq!(json_stdout(&out)["status"], "completed");
    assert!(intercom.counters().cursor_expired >= 1, "the refused cursor was sent");
    assert_fell_back(&stderr(&out), &events_path);
    assert_eq!(stored_ids(&db_path), quality, "every conversation stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_whose_cursor_expired_restarts_the_partition_and_completes() {
    let intercom = fake(1_200).await;
    let quality = expected(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let db_path = dir.path().join("resume.db");

    // Stop the first run (SIGTERM) once a few pages are in: its checkpoint holds a cursor.
    let mut cmd = sluice_for(&intercom);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path);
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_pages(&intercom, 4).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let before = stored_ids(&db_path).len();
    assert!(before < quality.len(), "stopped before the end ({before} of {}): {stopped:?}", quality.len());

    // The cursor of the checkpoint expires; the resume is refused once, restarts and completes.
    intercom.invalidate_cursors();
    let expired_before = intercom.counters().cursor_expired;
    let events_path = dir.path().join("events.jsonl");
    let mut resume = sluice_for(&intercom);
    resume
        .args(["run", "-q", "--json", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .args(["--resume-run-id", "1", "--events-out"])
        .arg(&events_path);
    let out = ok(output(resume).await);
    assert_eq!(json_stdout(&out)["status"], "completed", "{}", stderr(&out));
    assert_eq!(intercom.counters().cursor_expired, expired_before + 1, "the checkpoint's cursor was refused once");
    assert_fell_back(&stderr(&out), &events_path);
    assert_eq!(stored_ids(&db_path), quality, "every conversation stored once");
}
