//! The Intercom backfill as a user runs it: the real `sluice` binary against
//! the test kit's fake Intercom and fake OpenAI-compatible API (started in
//! this process, real HTTP over loopback), into SQLite. Faults injected:
//! 500s, 429s, dropped connections, an expired cursor, and SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sluice_testkit::intercom::IntercomTarget;
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{
    DropMode, FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme,
};

/// December 2025 (UTC), the range of every pipeline below, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;
const BATCH: u64 = 50;

async fn fake_intercom(conversations: usize, rate_limit: u32, faults: IntercomFaults) -> FakeIntercom {
    let config = IntercomConfig::default()
        .with_conversations(conversations)
        .with_days(45)
        .with_rate_limit(rate_limit)
        .with_faults(faults);
    FakeIntercom::start(config).await.expect("fake intercom starts")
}

async fn fake_openai(faults: OpenAiFaults) -> FakeOpenAi {
    FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.expect("fake openai starts")
}

/// Ids in the range that pass the quality filter, and those that do not.
fn expected(fake: &FakeIntercom) -> (BTreeSet<String>, BTreeSet<String>) {
    let ds = fake.dataset();
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    ds.ids_in_range(START, END).into_iter().partition(|id| !short.contains(id))
}

fn pipeline(dir: &Path, per_page: u32, partitions: usize, concurrency: usize) -> PathBuf {
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    let path = dir.join("backfill.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "backfill"
batch_size = {BATCH}
phase = "classification"
auto_create_stories = true

[source]
kind = "intercom"
date_from = "2025-12-01"
date_to = "2025-12-31"
per_page = {per_page}
partitions = {partitions}

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
workers = 2
model = "test-model"
concurrency = {concurrency}
categories = [{}]
{}"#,
            categories.join(", "),
            openai_phases(8)
        ),
    )
    .unwrap();
    path
}

/// Every stored conversation has an embedding, facets and a theme; the run's
/// themes cover them all once, and each theme of at least 5 became a story.
fn assert_all_phases_done(db_path: &Path, quality: &BTreeSet<String>) {
    let conn = db(db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE embedding IS NULL"), 0, "embedding_generation");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM documents WHERE json_extract(annotations, '$.facets.sentiment') IS NULL"),
        0,
        "facet_extraction"
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM documents WHERE json_extract(annotations, '$.theme.id') IS NULL"),
        0,
        "theme_extraction"
    );
    let themes: Vec<serde_json::Value> = results(&conn, "theme");
    assert!((2..=8).contains(&themes.len()), "{} themes", themes.len());
    let mut members: Vec<String> = themes
        .iter()
        .flat_map(|t| t["document_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()))
        .collect();
    members.sort();
    assert_eq!(members, quality.iter().cloned().collect::<Vec<_>>(), "each conversation in exactly one theme");
    assert!(themes.iter().all(|t| !t["label"].as_str().unwrap().is_empty()), "every theme is labelled");
    let stories = results(&conn, "story");
    let big = themes.iter().filter(|t| t["size"].as_u64().unwrap() >= 5).count();
    assert_eq!(stories.len(), big, "one story per theme of at least 5");
    for story in &stories {
        assert!(!story["title"].as_str().unwrap().is_empty() && !story["summary"].as_str().unwrap().is_empty());
        assert!(story["conversation_ids"].as_array().unwrap().len() >= 5);
    }
}

fn results(conn: &rusqlite::Connection, kind: &str) -> Vec<serde_json::Value> {
    let mut stmt = conn.prepare("SELECT value FROM run_results WHERE kind = ?1 ORDER BY key").unwrap();
    stmt.query_map([kind], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|v| serde_json::from_str(&v.unwrap()).unwrap())
        .collect()
}

/// The pipeline file without its later phases: the run ends with classification.
fn classification_only(path: PathBuf) -> PathBuf {
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("\n[phases.").next().unwrap().replace("auto_create_stories = true\n", "");
    std::fs::write(&path, head).unwrap();
    path
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

fn stored_ids(db_path: &Path) -> Vec<String> {
    let conn = db(db_path);
    let mut stmt = conn.prepare("SELECT id FROM documents ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_faults_stores_each_conversation_once_and_pays_once() {
    // Search answers: every 7th a 500, every 11th a 429, every 13th a dropped connection;
    // 24 requests per 10 s, so the source has to pace itself.
    let intercom = fake_intercom(
        4_000,
        24,
        IntercomFaults {
            endpoints: IntercomTarget::Search,
            fail_every: Some(7),
            rate_limit_every: Some(11),
            drop_every: Some(13),
            drop_mode: DropMode::MidBody,
            ..IntercomFaults::default()
        },
    )
    .await;
    let openai = fake_openai(OpenAiFaults {
        endpoints: OpenAiTarget::Chat,
        fail_every: Some(37),
        rate_limit_every: Some(97),
        drop_every: Some(41),
        drop_mode: DropMode::BeforeHeaders,
        ..OpenAiFaults::default()
    })
    .await;
    let (quality, short) = expected(&intercom);
    assert!(quality.len() > 2_000 && !short.is_empty(), "{} quality, {} short", quality.len(), short.len());

    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), 150, 1, 8);
    let db_path = dir.path().join("backfill.db");
    let events_path = dir.path().join("events.jsonl");
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "--json", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .arg("--events-out")
        .arg(&events_path);
    let run = tokio::spawn(output(cmd));
    // Expire every cursor once the backfill is under way: the next page's cursor is refused.
    let started = Instant::now();
    while intercom.counters().pages_served < 5 {
        assert!(started.elapsed() < Duration::from_secs(120), "the backfill does not progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    intercom.invalidate_cursors();
    let out = ok(run.await.unwrap());
    let summary = json_stdout(&out);
    let log = stderr(&out);
    assert_eq!(summary["status"], "completed", "{log}");

    // Every quality conversation in range stored exactly once, classified; no short one.
    let ids = stored_ids(&db_path);
    assert_eq!(ids.len(), quality.len(), "one row per conversation");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), quality);
    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE category IS NULL"), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE text LIKE '%<p>%'"), 0, "HTML was stripped");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM failures"), 0);

    // One LLM call per quality conversation, none twice, despite the cursor fallback.
    let llm = openai.counters();
    assert_eq!(llm.chat_completions, quality.len() as u64, "LLM calls == distinct quality conversations");
    assert_eq!(llm.distinct_chat_inputs, quality.len() as u64);
    assert_eq!(llm.max_chat_repeats, 1);
    assert!(llm.faults.server_error > 0 && llm.faults.rate_limit > 0 && llm.faults.drop > 0, "{:?}", llm.faults);

    // The faults happened and were survived.
    let api = intercom.counters();
    assert!(api.faults.server_error > 0 && api.faults.rate_limit > 0 && api.faults.drop > 0, "{:?}", api.faults);
    assert!(api.cursor_expired >= 1, "the expired cursor was used: {api:?}");
    assert!(api.rate_limited <= 2, "pacing kept the real limiter quiet: {} 429s", api.rate_limited);
    assert!(log.contains("Cursor invalid on resume, restarted from beginning"), "{log}");
    let events = events(&events_path);
    assert_eq!(count_type(&events, "CursorFallback"), 1);
    let waits =
        |state: &str| events.iter().filter(|e| e["type"] == "AdapterStateChange" && e["new_state"] == state).count();
    assert!(waits("rate_limited") > 0 && waits("backing_off") > 0, "waits are events");
    assert!(!log.contains(intercom.token()) && !log.contains(openai.key()), "no secret in the logs");
    let events_text = std::fs::read_to_string(&events_path).unwrap();
    assert!(!events_text.contains(intercom.token()) && !events_text.contains(openai.key()));

    // The status document: range, counts from the checkpoint, cursor and cost ledger.
    let status = json_stdout(&ok(output({
        let mut cmd = sluice();
        cmd.args(["status", "1", "--json", "--db"]).arg(&db_path);
        cmd
    })
    .await));
    assert_eq!((status["date_from"].as_str(), status["date_to"].as_str()), (Some("2025-12-01"), Some("2025-12-31")));
    assert_eq!(status["current_phase"], "story_creation");
    assert_eq!(status["conversations_filtered"], 0, "streaming: short ones are dropped at page level");
    assert_eq!(status["conversations_fetched"], status["checkpoint"]["counts"]["fetched"]);
    assert_eq!(status["conversations_classified"], status["conversations_stored"]);
    assert_eq!(
        status["checkpoint"]["phases_done"],
        json!(["classification", "embedding_generation", "facet_extraction", "theme_extraction", "story_creation"])
    );
    for phase in ["embedding_generation", "facet_extraction", "theme_extraction"] {
        assert_eq!(status["checkpoint"]["phase_counts"][phase]["stored"], quality.len(), "{phase}: {status}");
    }
    assert_eq!(
        status["cost"]["embedding_calls"], llm.embedding_responses,
        "the ledger counts the embedding calls the API answered"
    );
    assert_all_phases_done(&db_path, &quality);
    assert_eq!(status["cost"]["llm_calls"], quality.len() as u64);
    assert_eq!(status["cost"]["tokens_in"], llm.prompt_tokens);
    assert_eq!(status["cost"]["tokens_out"], llm.completion_tokens);
    let saved = status["cost"]["calls_saved"].as_u64().unwrap();
    assert!(saved > 0, "the conversations re-read after the fallback came from the memo");
    assert_eq!(saved, status["counts"]["skipped_unchanged"].as_u64().unwrap());
    assert!(log.contains("Processing batch 1: 50 conversations"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_classification_then_resume_pays_only_for_what_was_not_committed() {
    let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill points seeded with SLUICE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..3 {
        let intercom = fake_intercom(1_500, 1_000, IntercomFaults::default()).await;
        // 15 ms per LLM call, 4 at a time: classification takes a few seconds.
        let openai = fake_openai(OpenAiFaults { latency_ms: 15, ..OpenAiFaults::default() }).await;
        let (quality, _) = expected(&intercom);
        let dir = tempfile::tempdir().unwrap();
        let config = pipeline(dir.path(), 100, 1, 4);
        let db_path = dir.path().join("crash.db");

        let mut cmd = sluice_for(&intercom, &openai);
        cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path);
        cmd.stderr(std::process::Stdio::null());
        let mut child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().unwrap();
        let kill_after = Duration::from_millis(rng.u64(500..3_000));
        let finished_alone = tokio::time::timeout(kill_after, child.wait()).await.is_ok();
        if finished_alone {
            eprintln!("round {round}: the run ended before the kill at {kill_after:?}");
            continue;
        }
        child.start_kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().await.unwrap();
        // Requests the dead process had in flight may still be answered (and paid): let them land.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let paid_before = openai.counters().chat_completions;
        let conn = db(&db_path);
        let committed: i64 = conn
            .query_row("SELECT json_extract(checkpoint, '$.counts.stored') FROM pipeline_runs WHERE id = 1", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .unwrap()
            .unwrap_or(0);
        let remembered = count(&conn, "SELECT COUNT(*) FROM stage_results WHERE stage = 'classify'");
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM documents"),
            committed,
            "the store holds what the checkpoint says"
        );
        // Written ahead of their batch: the committed ones, and those of the batches in flight.
        assert!(remembered >= committed, "every committed classification is remembered ({remembered} < {committed})");
        drop(conn);
        // Paid for but not remembered: the calls in flight at the kill (the write-ahead stores
        // each answer before its call's slot is freed).
        let lost = paid_before as i64 - remembered;
        assert!(lost >= 0);
        assert!(lost <= 4, "round {round}: {lost} classifications lost in flight (bound: classify's concurrency of 4)");

        // Resume by id (round 0), after the cursors expired (round 1), by pipeline name (round 2).
        let mut resume = sluice_for(&intercom, &openai);
        resume.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path);
        if round == 1 {
            intercom.invalidate_cursors();
        }
        let out = if committed == 0 {
            // Nothing committed: nothing to resume (the runbook: restart from the beginning).
            output(resume).await
        } else {
            if round == 2 {
                resume.arg("--resume");
            } else {
                resume.args(["--resume-run-id", "1"]);
            }
            ok(output(resume).await)
        };
        assert!(out.status.success(), "{}", stderr(&out));

        if round == 1 && committed >= 100 {
            // The checkpoint's cursor named a page after the first: refused, so the partition restarted.
            assert!(intercom.counters().cursor_expired >= 1, "round {round}: the resume met the expired cursor");
            assert!(stderr(&out).contains("Cursor invalid on resume, restarted from beginning"), "{}", stderr(&out));
        }
        let ids = stored_ids(&db_path);
        assert_eq!(ids.len(), quality.len(), "round {round}: one row per conversation");
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), quality, "round {round}: the same result");
        let llm = openai.counters();
        let paid_on_resume = llm.chat_completions - paid_before;
        assert_eq!(
            paid_on_resume as i64,
            quality.len() as i64 - remembered,
            "round {round}: the resume classified exactly the conversations without a committed result"
        );
        assert_eq!(llm.chat_completions as i64, quality.len() as i64 + lost, "round {round}: total = distinct + lost");
        let repeated = openai.chat_input_counts().values().filter(|n| **n > 1).count() as i64;
        assert_eq!(repeated, lost, "round {round}: only the in-flight ones were paid twice");
        assert!(llm.max_chat_repeats <= 2);
        eprintln!(
            "round {round}: killed after {kill_after:?} with {committed} committed; {lost} paid in flight and \
             re-paid; resume paid {paid_on_resume}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_counts_raw_fetches_and_a_refused_token_fails_the_run() {
    let intercom = fake_intercom(600, 1_000, IntercomFaults::default()).await;
    let openai = fake_openai(OpenAiFaults::default()).await;
    let (quality, short) = expected(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = classification_only(pipeline(dir.path(), 150, 2, 8));
    let db_path = dir.path().join("batch.db");

    // Legacy batch mode: fetched is the raw count, the quality stage filters.
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "--json", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db_path)
        .env("PIPELINE_STREAMING_BATCH", "false");
    let summary = json_stdout(&ok(output(cmd).await));
    assert_eq!(summary["counts"]["fetched"], (quality.len() + short.len()) as u64);
    assert_eq!(summary["counts"]["filtered"], short.len() as u64);
    assert_eq!(summary["counts"]["stored"], quality.len() as u64);
    assert_eq!(stored_ids(&db_path).into_iter().collect::<BTreeSet<_>>(), quality);
    assert_eq!(openai.counters().chat_completions, quality.len() as u64);
    let status = json_stdout(&ok(output({
        let mut cmd = sluice();
        cmd.args(["status", "1", "--json", "--db"]).arg(&db_path);
        cmd
    })
    .await));
    assert!(
        !status["checkpoint"].as_object().unwrap().contains_key("intercom_cursor"),
        "two partitions: the cursors are per partition"
    );
    assert_eq!(status["checkpoint"]["partitions"].as_object().unwrap().len(), 2);

    // A refused Intercom token: the run fails, saying which variable to fix, never its value.
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(dir.path().join("bad.db"));
    cmd.env("INTERCOM_ACCESS_TOKEN", "tok-wrong-8271");
    let out = output(cmd).await;
    assert!(!out.status.success());
    let log = stderr(&out);
    assert!(log.contains("INTERCOM_ACCESS_TOKEN") && log.contains("401"), "{log}");
    assert!(!log.contains("tok-wrong-8271"), "{log}");

    // A refused LLM key: the run fails, naming OPENAI_API_KEY, not the key.
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(dir.path().join("bad2.db"));
    cmd.env("OPENAI_API_KEY", "sk-wrong-5523");
    let out = output(cmd).await;
    assert!(!out.status.success());
    let log = stderr(&out);
    assert!(log.contains("OPENAI_API_KEY") && log.contains("401"), "{log}");
    assert!(!log.contains("sk-wrong-5523"), "{log}");

    // No token at all: refused at start with the variable's name.
    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(dir.path().join("bad3.db"));
    cmd.env_remove("INTERCOM_ACCESS_TOKEN");
    cmd.current_dir(dir.path()); // no .env here
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("INTERCOM_ACCESS_TOKEN is not set"), "{}", stderr(&out));
}

#[test]
fn the_example_pipeline_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice()
        .args(["run", "-q", "-c"])
        .arg(repo_root().join("examples/intercom.toml"))
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .env("INTERCOM_BASE_URL", "http://127.0.0.1:1")
        .env_remove("INTERCOM_ACCESS_TOKEN")
        .current_dir(dir.path()) // away from any .env
        .output()
        .unwrap();
    // It parses; it stops at the missing token.
    let log = stderr(&out);
    assert!(log.contains("INTERCOM_ACCESS_TOKEN is not set") || log.contains("OPENAI_API_KEY"), "{log}");
}

/// The phase the run's row names once it has committed something (a kill
/// before the first commit leaves nothing to resume), else `None`.
/// The phase of run 1 once a batch of it is committed. Not merely a checkpoint:
/// the write-ahead gives a run an empty one (its ledger) before its first commit,
/// and a run killed then has nothing to resume.
fn phase_of_run(db_path: &Path) -> Option<String> {
    let conn = rusqlite::Connection::open(db_path).ok()?;
    conn.query_row(
        "SELECT phase FROM pipeline_runs WHERE id = 1 AND json_extract(checkpoint, '$.batches') > 0",
        [],
        |r| r.get(0),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_every_phase_then_resume_by_id_gives_the_same_result_and_pays_nothing_again() {
    let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill points seeded with SLUICE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut reference: Option<(Vec<serde_json::Value>, Vec<serde_json::Value>)> = None;
    for phase in ["classification", "embedding_generation", "facet_extraction", "theme_extraction", "story_creation"] {
        let intercom = fake_intercom(1_200, 1_000, IntercomFaults::default()).await;
        let openai = fake_openai(OpenAiFaults { latency_ms: 10, ..OpenAiFaults::default() }).await;
        let (quality, _) = expected(&intercom);
        let dir = tempfile::tempdir().unwrap();
        let config = pipeline(dir.path(), 100, 1, 4);
        let db_path = dir.path().join("phases.db");

        let mut cmd = sluice_for(&intercom, &openai);
        cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path);
        cmd.stderr(std::process::Stdio::null());
        let mut child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().unwrap();
        // Wait for the phase to begin (its start, or classification's first batch, is committed),
        // then kill at a random moment in it.
        let started = Instant::now();
        let mut finished_alone = false;
        while phase_of_run(&db_path).as_deref() != Some(phase) {
            if child.try_wait().unwrap().is_some() {
                finished_alone = true;
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{phase} never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let window = if phase == "classification" { 200..1_500 } else { 0..30 };
        let kill_after = Duration::from_millis(rng.u64(window));
        finished_alone = finished_alone || tokio::time::timeout(kill_after, child.wait()).await.is_ok();
        child.start_kill().ok(); // SIGKILL: no chance to clean up
        child.wait().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // let answers to the dead process land

        let killed_in = phase_of_run(&db_path).unwrap_or_default();
        let conn = db(&db_path);
        let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
        let remembered = count(&conn, "SELECT COUNT(*) FROM stage_results WHERE stage = 'classify'");
        drop(conn);
        let chat_before = openai.counters().chat_completions;
        if status != "completed" {
            let mut resume = sluice_for(&intercom, &openai);
            resume.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path).args(["--resume-run-id", "1"]);
            ok(output(resume).await);
        }
        eprintln!("{phase}: killed after {kill_after:?} in {killed_in} ({status}, finished alone: {finished_alone})");

        let ids = stored_ids(&db_path);
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), quality, "{phase}: every conversation stored");
        let conn = db(&db_path);
        assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), quality.len() as i64, "{phase}: each once");
        let status: String = conn.query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(status, "completed");
        assert_all_phases_done(&db_path, &quality);
        let chat_on_resume = openai.counters().chat_completions - chat_before;
        if killed_in == "classification" {
            assert_eq!(chat_on_resume as i64, quality.len() as i64 - remembered, "only the unclassified are paid for");
        } else {
            assert_eq!(chat_on_resume, 0, "{phase}: no LLM call for conversations classified before the kill");
        }
        // Same data, same seed: the same themes and stories whatever the phase the kill hit.
        let outcome = (results(&conn, "theme"), results(&conn, "story"));
        match &reference {
            None => reference = Some(outcome),
            Some(first) => assert!(first == &outcome, "{phase}: themes or stories differ from the first round"),
        }
    }
}
