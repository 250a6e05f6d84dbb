//! Unchanged work costs nothing, and the counts reconcile with the table
//! (issue 18 item 1, issue 11 item 6): the real binary against the test
//! kit's fake Intercom (which can expire cursors) and fake OpenAI, into
//! SQLite and PostgreSQL. A record seen again with the same content, by a
//! pipeline of the same stage configuration, is skipped before any stage:
//! not paid for, not rewritten, not counted again as fetched or stored.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sluice_testkit::intercom::{Change, IntercomTarget};
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, Theme};

/// December 2025 (UTC), the range of the pipeline, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;

async fn fake_intercom() -> FakeIntercom {
    let faults = IntercomFaults {
        endpoints: IntercomTarget::Search,
        latency_ms: 40,
        generic_cursor_errors: true,
        ..IntercomFaults::default()
    };
    let config = IntercomConfig::default().with_conversations(700).with_days(45).with_faults(faults);
    FakeIntercom::start(config).await.expect("fake intercom starts")
}

/// Ids in the range that pass the quality filter.
fn expected(fake: &FakeIntercom) -> BTreeSet<String> {
    let ds = fake.dataset();
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    ds.ids_in_range(START, END).into_iter().filter(|id| !short.contains(id)).collect()
}

/// normalize -> classify (LLM, paid) -> chunk (`chunk_size` chars) -> embed (OpenAI, paid).
fn pipeline(dir: &Path, chunk_size: usize) -> PathBuf {
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    let path = dir.join("unchanged.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "unchanged"
batch_size = 20

[source]
kind = "intercom"
date_from = "2025-12-01"
date_to = "2025-12-31"
per_page = 20

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "test-model"
categories = [{}]

[[stages]]
kind = "chunk"
by = "chars"
size = {chunk_size}
overlap = 20

[[stages]]
kind = "embed"
provider = "openai"
model = "test-embedding"
dimensions = 16
"#,
            categories.join(", ")
        ),
    )
    .unwrap();
    path
}

/// The command's output, or a failed test (not a hung one) after 180 s.
fn output(mut cmd: std::process::Command) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output().expect("sluice runs")));
    rx.recv_timeout(Duration::from_secs(180)).expect("sluice finishes in time")
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

/// A completed run of `config` (a new one, or the resume of `resume`); its status document.
fn run(intercom: &FakeIntercom, openai: &FakeOpenAi, store: &TestDb, config: &Path, resume: Option<i64>) -> Value {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["run", "-q", "--json", "-c"]).arg(config).arg("--db").arg(store.arg());
    if let Some(id) = resume {
        cmd.args(["--resume-run-id", &id.to_string()]);
    }
    let out = ok(output(cmd));
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed", "{}", stderr(&out));
    let id = summary["run_id"].as_i64().expect("the summary names its run");
    let mut status = sluice_for(intercom, openai);
    status.args(["status", &id.to_string(), "--json", "--db"]).arg(store.arg());
    json_stdout(&ok(output(status)))
}

/// What the fake OpenAI answered: (chat completions, embeddings responses).
fn paid(openai: &FakeOpenAi) -> (u64, u64) {
    let c = openai.counters();
    (c.chat_completions, c.embedding_responses)
}

fn n(status: &Value, field: &str) -> i64 {
    status[field].as_i64().unwrap_or_else(|| panic!("{field} in {status}"))
}

/// The fakes serve from this runtime's threads while the test drives the binary and reads the store.
fn stop_fallback_resume_then_rerun(store: TestDb) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let intercom = runtime.block_on(fake_intercom());
    let openai = runtime.block_on(FakeOpenAi::start(OpenAiConfig::default())).expect("fake openai starts");
    let quality = expected(&intercom);
    let total = quality.len() as i64;
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), 400);

    // Run 1 is stopped (SIGTERM) a few pages in: its checkpoint holds a cursor.
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(store.arg());
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while intercom.counters().pages_served < 4 {
        assert!(started.elapsed() < Duration::from_secs(120), "the run does not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    child.wait().unwrap();
    store.settle();
    let before = store.scalar("SELECT count(*) FROM documents").unwrap_or(0);
    assert!(before > 0 && before < total, "stopped in the middle ({before} of {total})");

    // The checkpoint's cursor expires: the resume restarts the partition and
    // fetches the stored conversations again, which are unchanged.
    intercom.invalidate_cursors();
    let status = run(&intercom, &openai, &store, &config, Some(1));
    let rows = store.scalar("SELECT count(*) FROM documents WHERE run_id = 1").unwrap();
    assert_eq!(rows, total, "every conversation stored");
    assert_eq!(n(&status, "conversations_stored"), rows, "stored = the run's rows: {status}");
    assert_eq!(n(&status, "conversations_fetched"), total, "each counted as fetched once");
    assert_eq!(n(&status, "conversations_classified"), total);
    assert_eq!(n(&status, "conversations_unchanged"), before, "the re-fetched ones are unchanged");
    assert_eq!(status["counts"]["unchanged"], status["conversations_unchanged"]);
    assert_eq!(store.scalar("SELECT max(write_count) FROM documents"), Some(1));

    // A fresh re-run over unchanged data: nothing paid, nothing written, all unchanged.
    let paid_before = paid(&openai);
    let status = run(&intercom, &openai, &store, &config, None);
    assert_eq!(paid(&openai), paid_before, "0 paid calls");
    assert_eq!(
        (
            n(&status, "conversations_fetched"),
            n(&status, "conversations_stored"),
            n(&status, "conversations_unchanged")
        ),
        (0, 0, total),
        "{status}"
    );
    assert_eq!(store.scalar("SELECT max(write_count) FROM documents"), Some(1));
    assert_eq!(store.scalar("SELECT count(*) FROM documents WHERE run_id = 2"), Some(0));
    let ledger = &status["cost"];
    assert_eq!((ledger["llm_calls"].as_i64(), ledger["embedding_calls"].as_i64()), (Some(0), Some(0)), "{ledger}");

    // One conversation edited: that one alone is processed, paid for and rewritten.
    let edited = quality.iter().next().unwrap().clone();
    let updated_at = intercom.dataset().get(&edited).unwrap().updated_at;
    let change = Change {
        id: Some(edited.clone()),
        updated_at,
        body: Some("<p>The export to CSV crashes since the update, please help</p>".into()),
    };
    intercom.apply(&[change]).unwrap();
    let paid_before = paid(&openai);
    let status = run(&intercom, &openai, &store, &config, None);
    let (chat, embeddings) = paid(&openai);
    assert_eq!(chat - paid_before.0, 1, "one classification paid");
    assert!(embeddings > paid_before.1, "its chunks embedded");
    assert_eq!((n(&status, "conversations_stored"), n(&status, "conversations_unchanged")), (1, total - 1));
    let again = store.scalar(&format!("SELECT write_count FROM documents WHERE id = '{edited}'"));
    assert_eq!(again, Some(2), "the edited one rewritten");
    assert_eq!(store.scalar("SELECT count(*) FROM documents WHERE write_count > 1"), Some(1), "no other");

    // Another chunk size: another pipeline fingerprint, so every conversation
    // is processed and rewritten (the paid stages still reuse their memo
    // where their own results did not change).
    let config = pipeline(dir.path(), 300);
    let paid_before = paid(&openai);
    let status = run(&intercom, &openai, &store, &config, None);
    assert_eq!(paid(&openai).0, paid_before.0, "the labels are reused");
    assert_eq!((n(&status, "conversations_stored"), n(&status, "conversations_unchanged")), (total, 0));
    assert_eq!(store.scalar("SELECT min(write_count) FROM documents"), Some(2));
    store.cleanup();
}

#[test]
fn sqlite_counts_reconcile_after_a_fallback_and_a_rerun_of_unchanged_data_pays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    stop_fallback_resume_then_rerun(TestDb::sqlite(dir.path()));
}

#[test]
fn postgres_counts_reconcile_after_a_fallback_and_a_rerun_of_unchanged_data_pays_nothing() {
    let Some(store) = TestDb::postgres() else { return };
    stop_fallback_resume_then_rerun(store);
}
