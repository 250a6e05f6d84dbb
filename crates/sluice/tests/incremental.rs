//! Incremental runs (docs/incremental.md) with the real binary against the
//! test kit's fake Intercom and fake OpenAI-compatible API, into SQLite: a
//! completed backfill, then changes in the fake, then runs that read only
//! from the high-water mark and pay only for what changed.

mod common;
mod serve_kit;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use serve_kit::*;
use sluice_connectors::util::time::format_timestamp;
use sluice_testkit::intercom::Change;
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults};

const PER_PAGE: u64 = 20;
const OVERLAP: i64 = 300;

async fn fakes(conversations: usize, faults: IntercomFaults) -> (FakeIntercom, FakeOpenAi) {
    let config = IntercomConfig::default().with_conversations(conversations).with_days(45).with_faults(faults);
    let intercom = FakeIntercom::start(config).await.expect("fake intercom starts");
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.expect("fake openai starts");
    (intercom, openai)
}

fn pipeline(dir: &Path) -> PathBuf {
    let path = dir.join("incr.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "incr"
batch_size = 10
phase = "classification"

[source]
kind = "intercom"
date_from = "2025-12-01"
date_to = "2025-12-31"
per_page = {PER_PAGE}
overlap_secs = {OVERLAP}

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "test-model"
concurrency = 2
categories = ["billing", "bug", "other"]
"#
        ),
    )
    .unwrap();
    path
}

/// `sluice run -q --json -c CONFIG --db DB` and `extra`, which must complete.
async fn run(intercom: &FakeIntercom, openai: &FakeOpenAi, config: &Path, db: &Path, extra: &[&str]) -> String {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["run", "-q", "--json", "-c"]).arg(config).arg("--db").arg(db).args(extra);
    let out = output(cmd).await;
    let log = stderr(&out);
    assert!(out.status.success(), "sluice failed ({:?}):\n{log}", out.status.code());
    assert_eq!(json_stdout(&out)["status"], "completed", "{log}");
    log
}

fn scalar(db_path: &Path, sql: &str) -> i64 {
    count(&db(db_path), sql)
}

fn text(db_path: &Path, sql: &str) -> String {
    db(db_path).query_row(sql, [], |r| r.get(0)).unwrap()
}

fn high_water(db_path: &Path) -> i64 {
    scalar(db_path, "SELECT max(updated_at) FROM documents")
}

/// Search pages a run over `n` conversations needs, and the one-item estimate.
fn pages_for(n: i64) -> u64 {
    (n.max(1) as u64).div_ceil(PER_PAGE) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_from_the_high_water_mark_and_pay_only_for_changes() {
    let (intercom, openai) = fakes(400, IntercomFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path) = (pipeline(dir.path()), dir.path().join("incr.db"));

    // The first incremental run of a pipeline is a backfill of its range, and says so.
    let log = run(&intercom, &openai, &config, &db_path, &["--incremental"]).await;
    assert!(log.contains("no completed run of pipeline \"incr\" yet"), "{log}");
    let stored = scalar(&db_path, "SELECT count(*) FROM documents");
    let backfill_pages = intercom.counters().search_requests;
    assert!(stored > 100 && backfill_pages >= pages_for(stored), "{stored} stored in {backfill_pages} pages");
    assert_eq!(openai.counters().chat_completions, stored as u64);
    assert_eq!(text(&db_path, "SELECT date_from FROM pipeline_runs WHERE id = 1"), "2025-12-01");

    // New and updated conversations after the backfill.
    let mark = high_water(&db_path);
    let overlap = scalar(&db_path, &format!("SELECT count(*) FROM documents WHERE updated_at >= {}", mark - OVERLAP));
    let oldest: Vec<String> = {
        let conn = db(&db_path);
        let mut stmt = conn.prepare("SELECT id FROM documents ORDER BY updated_at, id LIMIT 3").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let mut changes: Vec<Change> = oldest
        .iter()
        .enumerate()
        .map(|(i, id)| Change {
            id: Some(id.clone()),
            updated_at: mark + 100 + i as i64,
            body: Some(format!("<p>Update {i}: the refund never arrived, please check my invoice again.</p>")),
        })
        .collect();
    changes.extend((0..5).map(|i| Change { id: None, updated_at: mark + 200 + i, body: None }));
    let ids = intercom.apply(&changes).unwrap();
    intercom.reset_counters();
    openai.reset_counters();

    let log = run(&intercom, &openai, &config, &db_path, &["--incremental"]).await;
    assert!(log.contains("incremental run after run 1"), "{log}");
    // Only the pages of the new range: the changes and the overlap.
    let read = overlap + changes.len() as i64;
    let pages = intercom.counters().search_requests;
    assert!(pages <= pages_for(read) && pages < backfill_pages, "{pages} search requests for {read} conversations");
    // Paid only for new or changed conversations; the overlap re-read costs nothing.
    assert_eq!(openai.counters().chat_completions, changes.len() as u64);
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM documents"), stored + 5);
    for id in &ids {
        let sql = format!("SELECT count(*) FROM documents WHERE id = '{id}' AND run_id = 2 AND category IS NOT NULL");
        assert_eq!(scalar(&db_path, &sql), 1, "{id} stored and classified by the incremental run");
    }
    // Everything before the overlap is untouched.
    let before = format!("updated_at < {}", mark - OVERLAP);
    assert_eq!(
        scalar(
            &db_path,
            &format!("SELECT count(*) FROM documents WHERE {before} AND (write_count > 1 OR run_id <> 1)")
        ),
        0
    );
    // The run records its range: the mark minus the overlap, up to now.
    assert_eq!(text(&db_path, "SELECT date_from FROM pipeline_runs WHERE id = 2"), format_timestamp(mark - OVERLAP));
    let to = text(&db_path, "SELECT date_to FROM pipeline_runs WHERE id = 2");
    assert!(to.as_str() > "2026-", "{to}");

    // The next incremental run starts after the previous one, and only re-reads its overlap.
    let mark2 = high_water(&db_path);
    assert_eq!(mark2, mark + 204);
    intercom.reset_counters();
    openai.reset_counters();
    let log = run(&intercom, &openai, &config, &db_path, &["--incremental"]).await;
    assert!(log.contains("incremental run after run 2"), "{log}");
    assert_eq!(text(&db_path, "SELECT date_from FROM pipeline_runs WHERE id = 3"), format_timestamp(mark2 - OVERLAP));
    assert_eq!(intercom.counters().search_requests, 2, "one page and the estimate");
    assert_eq!(openai.counters().chat_completions, 0, "the overlap is re-read, not re-paid");
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM documents"), stored + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_true_in_the_file_and_a_sigkill_during_the_run_resumes_its_range() {
    let (intercom, openai) = fakes(120, IntercomFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path) = (pipeline(dir.path()), dir.path().join("incr.db"));
    run(&intercom, &openai, &config, &db_path, &[]).await;
    let stored = scalar(&db_path, "SELECT count(*) FROM documents");
    let mark = high_water(&db_path);
    let changes: Vec<Change> = (0..60).map(|i| Change { id: None, updated_at: mark + 10 + i, body: None }).collect();
    intercom.apply(&changes).unwrap();
    let text_now = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text_now.replace("overlap_secs", "incremental = true\noverlap_secs")).unwrap();
    // Slow answers, so the kill lands in the middle of the run.
    openai.set_faults(OpenAiFaults { endpoints: OpenAiTarget::Chat, latency_ms: 60, ..OpenAiFaults::default() });
    openai.reset_counters();

    let mut cmd = sluice_for(&intercom, &openai);
    cmd.args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db_path);
    let mut child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().unwrap();
    let started = Instant::now();
    while scalar(&db_path, "SELECT count(*) FROM documents") < stored + 10 {
        assert!(started.elapsed() < Duration::from_secs(60), "the incremental run does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let span = text(&db_path, "SELECT date_from FROM pipeline_runs WHERE id = 2");
    assert_eq!(span, format_timestamp(mark - OVERLAP));

    openai.set_faults(OpenAiFaults::default());
    let log = run(&intercom, &openai, &config, &db_path, &["--resume"]).await;
    assert!(log.contains("resuming run"), "{log}");
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM pipeline_runs"), 2, "resumed, not started again");
    assert_eq!(text(&db_path, "SELECT date_from FROM pipeline_runs WHERE id = 2"), span, "the same range");
    assert_eq!(text(&db_path, "SELECT status FROM pipeline_runs WHERE id = 2"), "completed");
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM documents"), stored + 60);
    // Paid once per new conversation, plus at most the calls in flight at the kill.
    let paid = openai.counters().chat_completions;
    assert!((60..=60 + 2 * 10).contains(&paid), "{paid} LLM calls for 60 new conversations");

    // `incremental = true`: a plain run is incremental too, after the resumed run.
    let log = run(&intercom, &openai, &config, &db_path, &[]).await;
    assert!(log.contains("incremental run after run 2"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_date_range_is_exact_when_the_api_compares_inclusively() {
    let faults = IntercomFaults { inclusive_comparisons: true, ..IntercomFaults::default() };
    let (intercom, openai) = fakes(200, faults).await;
    // Conversations one second either side of the range, and on its edges.
    let (start, end) = (1_764_547_200, 1_767_225_600); // 2025-12-01, 2026-01-01
    let edges: Vec<Change> =
        [start - 1, start, end - 1, end].iter().map(|&t| Change { id: None, updated_at: t, body: None }).collect();
    let ids = intercom.apply(&edges).unwrap();
    intercom.reset_counters();
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path) = (pipeline(dir.path()), dir.path().join("incr.db"));
    run(&intercom, &openai, &config, &db_path, &[]).await;
    let has = |id: &str| scalar(&db_path, &format!("SELECT count(*) FROM documents WHERE id = '{id}'")) == 1;
    assert_eq!(ids.iter().map(|id| has(id)).collect::<Vec<_>>(), [false, true, true, false]);
    let outside =
        scalar(&db_path, &format!("SELECT count(*) FROM documents WHERE updated_at < {start} OR updated_at >= {end}"));
    assert_eq!(outside, 0);
    let inside = intercom.dataset().ids_in_range(start, end).len() as i64;
    let short = intercom.dataset().short_ids();
    let quality = intercom.dataset().ids_in_range(start, end).iter().filter(|id| !short.contains(id)).count() as i64;
    assert!(inside >= quality);
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM documents"), quality);
    // The fake did list the two outside the range (and one for the estimate): the source dropped them.
    assert_eq!(intercom.counters().conversations_listed, inside as u64 + 2 + 1);

    // The fake's default is strict: the same range without the setting lists and stores the same rows.
    intercom.set_faults(IntercomFaults::default());
    intercom.reset_counters();
    let db2 = dir.path().join("strict.db");
    run(&intercom, &openai, &config, &db2, &[]).await;
    assert_eq!(scalar(&db2, "SELECT count(*) FROM documents"), quality);
    assert_eq!(intercom.counters().conversations_listed, inside as u64 + 1);
}

/// A `sluice serve` of the incremental pipeline with `schedule` (`--every 1s`,
/// `--cron ...`), its log in `serve.log`. Each LLM call takes a while, so the
/// first run (a backfill) spans several ticks.
struct Scheduled {
    server: Server,
    log: PathBuf,
    _fakes: (FakeIntercom, FakeOpenAi),
    _dir: tempfile::TempDir,
}

async fn scheduled_serve(schedule: &[&str]) -> Scheduled {
    let (intercom, openai) = fakes(100, IntercomFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path, log) = (pipeline(dir.path()), dir.path().join("incr.db"), dir.path().join("serve.log"));
    let env = [
        ("INTERCOM_BASE_URL", intercom.base_url()),
        ("INTERCOM_ACCESS_TOKEN", intercom.token().to_string()),
        ("OPENAI_BASE_URL", format!("{}/v1", openai.base_url())),
        ("OPENAI_API_KEY", openai.key().to_string()),
        ("SLUICE_LOG", "info".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    openai.set_faults(OpenAiFaults { endpoints: OpenAiTarget::Chat, latency_ms: 40, ..OpenAiFaults::default() });
    let server = Server::start_logged(&config, &db_path, &env, schedule, &log);
    Scheduled { server, log, _fakes: (intercom, openai), _dir: dir }
}

/// Polls `/api/pipeline/active` until the schedule has started 2 runs and
/// skipped a tick while one was active; that answer's schedule.
async fn two_runs_and_a_skipped_tick(client: &reqwest::Client, server: &Server) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (_, active) = get(client, &server.url("/api/pipeline/active")).await;
        let schedule = &active["schedule"];
        if schedule["started"].as_u64() >= Some(2) && schedule["skipped"].as_u64() >= Some(1) {
            return schedule.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the schedule does not tick: {active}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The second run is incremental: it continues the first (an exact span).
async fn second_run_is_incremental(client: &reqwest::Client, server: &Server) {
    let (_, run2) = get(client, &server.url("/api/pipeline/status/2")).await;
    let from = run2["date_from"].as_str().unwrap_or_default().to_string();
    assert!(from.contains('T'), "an exact span: {run2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_every_starts_incremental_runs_on_schedule_and_skips_while_one_is_active() {
    let mut scheduled = scheduled_serve(&["--every", "1s"]).await;
    let server = &mut scheduled.server;
    let client = reqwest::Client::new();

    let (code, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!(code, 200, "{active}");
    assert_eq!(active["schedule"]["every_secs"], 1, "{active}");
    assert!(active["schedule"]["next_tick"].as_str().is_some_and(|t| t > "2026-"), "{active}");

    // The first tick starts a run; ticks while it is active are skipped.
    two_runs_and_a_skipped_tick(&client, server).await;
    second_run_is_incremental(&client, server).await;
    let (code, body) = post(&client, &server.url("/api/pipeline/run"), json!({"incremental": true, "days": 3})).await;
    assert_eq!(code, 400, "{body}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// `--cron` with six fields (seconds first): a tick every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cron_starts_incremental_runs_on_its_ticks_and_skips_while_one_is_active() {
    const EXPR: &str = "* * * * * *";
    let mut scheduled = scheduled_serve(&["--cron", EXPR]).await;
    let (server, log) = (&mut scheduled.server, &scheduled.log);
    let client = reqwest::Client::new();

    let (code, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!(code, 200, "{active}");
    assert_eq!(active["schedule"]["cron"], EXPR, "{active}");
    assert!(active["schedule"].get("every_secs").is_none_or(|v| v.is_null()), "{active}");
    assert!(active["schedule"]["next_tick"].as_str().is_some_and(|t| t > "2026-"), "{active}");

    let schedule = two_runs_and_a_skipped_tick(&client, server).await;
    second_run_is_incremental(&client, server).await;
    // Each start and each skip is logged before it is counted.
    let text = std::fs::read_to_string(log).unwrap();
    let lines = |what: &str| text.lines().filter(|l| l.contains(what)).count() as u64;
    assert!(lines("schedule: incremental run started") >= schedule["started"].as_u64().unwrap(), "{text}");
    assert!(lines("schedule: tick skipped: ") >= schedule["skipped"].as_u64().unwrap(), "{text}");
    assert!(text.contains("is already active"), "the skip names the active run:\n{text}");

    // `sluice status --server` shows the schedule, as text and as JSON.
    let out = run_ok(sluice().args(["status", "1", "--server", &server.base]));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = printed.lines().find(|l| l.contains("schedule: ")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains(&format!("cron {EXPR:?} (UTC), next tick 20")), "{line}");
    assert!(line.contains("skipped while a run was active"), "{line}");
    let doc = json_stdout(&run_ok(sluice().args(["status", "1", "--json", "--server", &server.base])));
    assert_eq!(doc["schedule"]["cron"], EXPR, "{doc}");
    assert!(doc["schedule"]["next_tick"].as_str().is_some_and(|t| t > "2026-"), "{doc}");
    assert!(doc["schedule"]["started"].as_u64() >= Some(2), "{doc}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_names_its_last_phase_done_and_a_resume_in_a_later_phase_asks_the_source_nothing() {
    let (intercom, openai) = fakes(80, IntercomFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path) = (pipeline(dir.path()), dir.path().join("incr.db"));
    append(&config, "\n[phases.facet_extraction]\n");
    run(&intercom, &openai, &config, &db_path, &[]).await;
    let done = text(&db_path, "SELECT json_extract(checkpoint, '$.phases_done') FROM pipeline_runs WHERE id = 1");
    assert_eq!(done, r#"["classification","facet_extraction"]"#);

    // The same run as if it had died in its facet phase.
    db(&db_path)
        .execute(
            "UPDATE pipeline_runs SET status = 'failed', checkpoint = json_remove(checkpoint, '$.phases_done[1]') \
             WHERE id = 1",
            [],
        )
        .unwrap();
    intercom.reset_counters();
    openai.reset_counters();
    let log = run(&intercom, &openai, &config, &db_path, &["--resume-run-id", "1"]).await;
    assert_eq!(intercom.counters().requests(), 0, "no request to Intercom from a later phase: {log}");
    assert_eq!(openai.counters().chat_completions, 0);
    let done = text(&db_path, "SELECT json_extract(checkpoint, '$.phases_done') FROM pipeline_runs WHERE id = 1");
    assert_eq!(done, r#"["classification","facet_extraction"]"#);
}

/// A plain test: `TestDb` blocks on its own runtime, so the fakes get one of theirs.
#[test]
fn postgres_incremental_run_starts_from_the_high_water_mark() {
    let Some(test_db) = TestDb::postgres() else {
        eprintln!("skipped: set SLUICE_TEST_POSTGRES_URL to run the PostgreSQL incremental test");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (intercom, openai) = rt.block_on(fakes(120, IntercomFaults::default()));
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let run_pg = |extra: &[&str]| {
        let mut cmd = sluice_for(&intercom, &openai);
        cmd.args(["run", "-q", "--json", "-c"]).arg(&config).arg("--db").arg(test_db.arg()).args(extra);
        let out = rt.block_on(output(cmd));
        assert!(out.status.success(), "sluice failed:\n{}", stderr(&out));
        stderr(&out)
    };
    run_pg(&[]);
    let stored = test_db.scalar("SELECT count(*) FROM documents").unwrap();
    let mark = test_db.scalar("SELECT max(updated_at) FROM documents").unwrap();
    let changes: Vec<Change> = (0..4).map(|i| Change { id: None, updated_at: mark + 50 + i, body: None }).collect();
    intercom.apply(&changes).unwrap();
    openai.reset_counters();
    let log = run_pg(&["--incremental"]);
    assert!(log.contains("incremental run after run 1"), "{log}");
    assert_eq!(
        test_db.text("SELECT date_from FROM pipeline_runs WHERE id = 2"),
        Some(format_timestamp(mark - OVERLAP))
    );
    assert_eq!(openai.counters().chat_completions, 4);
    assert_eq!(test_db.scalar("SELECT count(*) FROM documents"), Some(stored + 4));
    assert_eq!(test_db.scalar("SELECT max(updated_at) FROM documents"), Some(mark + 53));
    drop((intercom, openai));
    test_db.cleanup();
}

/// `pipeline(dir)` with every later phase: embeddings, facets, themes, stories.
fn pipeline_with_phases(dir: &Path) -> PathBuf {
    let path = pipeline(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let text =
        text.replacen("phase = \"classification\"\n", "phase = \"classification\"\nauto_create_stories = true\n", 1);
    std::fs::write(&path, text + &openai_phases(4)).unwrap();
    path
}

/// The documents whose theme note says they were `fitted` by run `run` (or assigned to its themes).
fn themed(db_path: &Path, run: i64, assigned: bool) -> i64 {
    let assigned = i64::from(assigned);
    scalar(
        db_path,
        &format!(
            "SELECT count(*) FROM documents WHERE json_extract(annotations, '$.theme.fitted_run') = {run}
               AND json_extract(annotations, '$.theme.assigned') = {assigned}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_run_embeds_only_what_changed_and_assigns_new_documents_to_the_fitted_themes() {
    let (intercom, openai) = fakes(200, IntercomFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db_path) = (pipeline_with_phases(dir.path()), dir.path().join("incr.db"));

    run(&intercom, &openai, &config, &db_path, &["--incremental"]).await;
    let stored = scalar(&db_path, "SELECT count(*) FROM documents");
    assert_eq!(openai.counters().embedded_inputs, stored as u64, "the backfill embeds every document");
    assert_eq!(themed(&db_path, 1, false), stored, "the backfill fits the themes over every document");
    let themes = scalar(&db_path, "SELECT count(*) FROM run_results WHERE run_id = 1 AND kind = 'theme'");
    assert!(themes >= 2, "{themes} themes");

    // Five new conversations: 2.4% of the store, under refit_new_share (50%) and refit_far_share (10%).
    let mark = high_water(&db_path);
    let changes: Vec<Change> = (0..5).map(|i| Change { id: None, updated_at: mark + 100 + i, body: None }).collect();
    intercom.apply(&changes).unwrap();
    openai.reset_counters();
    let log = run(&intercom, &openai, &config, &db_path, &["--incremental"]).await;
    assert!(log.contains("incremental run after run 1"), "{log}");
    assert_eq!(scalar(&db_path, "SELECT count(*) FROM documents"), stored + 5);
    let paid = openai.counters();
    assert_eq!(paid.embedded_inputs, 5, "only the new documents are embedded; the rest are memo hits");
    assert_eq!(paid.chat_completions, 5, "only the new documents are classified");
    // No refit: the new documents join run 1's themes, the others keep their notes.
    assert_eq!(themed(&db_path, 1, true), 5, "the new documents are assigned to the fitted themes");
    assert_eq!(themed(&db_path, 1, false), stored, "the documents of the fit keep their theme");
    let unthemed =
        scalar(&db_path, "SELECT count(*) FROM documents WHERE json_extract(annotations, '$.theme.id') IS NULL");
    assert_eq!(unthemed, 0);

    // Asked to, the next incremental run fits the themes again over everything, paying no call for it.
    openai.reset_counters();
    run(&intercom, &openai, &config, &db_path, &["--incremental", "--refit-themes"]).await;
    assert_eq!(themed(&db_path, 3, false), stored + 5, "refitted over every document");
    assert_eq!(openai.counters().embedded_inputs, 0);
}
