//! Distributed runs (issue 14) with the real binary: `sluice run
//! --distributed` and several `sluice worker` processes sharing one run
//! through the PostgreSQL of `SLUICE_TEST_POSTGRES_URL`, against the test
//! kit's fake Intercom and fake OpenAI (in this process, real HTTP over
//! loopback). Workers are SIGKILLed and restarted, and one is frozen
//! (SIGSTOP) past its lease and thawed, so its late commit is attempted
//! and refused by the fence.

mod common;
mod serve_kit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme};
use tokio::process::Child;

/// December 2025 (UTC), the range of every pipeline below, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;
const PARTITIONS: usize = 16;
const LEASE_SECS: &str = "2";

async fn fakes(conversations: usize, llm_latency_ms: u64) -> (FakeIntercom, FakeOpenAi) {
    let intercom = FakeIntercom::start(
        IntercomConfig::default()
            .with_conversations(conversations)
            .with_days(45)
            .with_rate_limit(100_000)
            .with_faults(IntercomFaults { latency_ms: 5, ..IntercomFaults::default() }),
    )
    .await
    .expect("fake intercom starts");
    let openai = FakeOpenAi::start(
        OpenAiConfig::default().with_faults(OpenAiFaults { latency_ms: llm_latency_ms, ..OpenAiFaults::default() }),
    )
    .await
    .expect("fake openai starts");
    (intercom, openai)
}

/// Ids in the range that pass the quality filter.
fn quality_ids(fake: &FakeIntercom) -> BTreeSet<String> {
    let ds = fake.dataset();
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    ds.ids_in_range(START, END).into_iter().filter(|id| !short.contains(id)).collect()
}

/// An Intercom backfill in `PARTITIONS` slices with LLM classification; `phases`: with every later phase.
fn pipeline(dir: &Path, phases: bool) -> PathBuf {
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    let later = if phases { "auto_create_stories = true\n" } else { "" };
    let mut text = format!(
        r#"name = "dist"
batch_size = 10
phase = "classification"
{later}
[source]
kind = "intercom"
date_from = "2025-12-01"
date_to = "2025-12-31"
per_page = 20
partitions = {PARTITIONS}

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "test-model"
concurrency = 2
categories = [{}]
"#,
        categories.join(", ")
    );
    if phases {
        text.push_str(&openai_phases(6));
    }
    let path = dir.join("dist.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Creates the distributed run; returns its id.
fn submit(intercom: &FakeIntercom, openai: &FakeOpenAi, config: &Path, url: &str) -> i64 {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["run", "--distributed", "--json", "-c"]).arg(config).args(["--db", url]);
    let out = run_ok(&mut cmd);
    let answer = json_stdout(&out);
    assert_eq!(answer["distributed"], true, "{answer}");
    answer["run_id"].as_i64().unwrap()
}

/// A worker process, its log in `log`.
fn spawn_worker(intercom: &FakeIntercom, openai: &FakeOpenAi, url: &str, log: &Path, delay_ms: Option<u64>) -> Child {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["worker", "--store", url, "--lease-secs", LEASE_SECS, "--slots", "2"]);
    if let Some(ms) = delay_ms {
        cmd.env("SLUICE_TEST_COMMIT_DELAY_MS", ms.to_string());
    }
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    tokio::process::Command::from(cmd).kill_on_drop(true).spawn().expect("worker starts")
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// `TestDb` blocks on a runtime of its own: call it from a thread outside this test's runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("a database call"))
}

fn sc(db: &TestDb, sql: &str) -> Option<i64> {
    off_runtime(|| db.scalar(sql))
}

fn tx(db: &TestDb, sql: &str) -> Option<String> {
    off_runtime(|| db.text(sql))
}

fn status_of(db: &TestDb, run: i64) -> String {
    tx(db, &format!("SELECT status FROM pipeline_runs WHERE id = {run}")).unwrap_or_default()
}

/// Waits for `what` (checked every 50 ms) or fails after `secs`.
async fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends the workers with SIGTERM (they release their leases and leave).
async fn stop_workers(workers: &mut [Child]) {
    for w in workers.iter() {
        if w.id().is_some() {
            signal(w, "-TERM");
        }
    }
    for w in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(20), w.wait()).await.expect("a worker leaves on SIGTERM");
    }
}

/// What every distributed run must leave behind: exactly the quality
/// conversations, each written once, every partition done with its commits
/// numbered 1..n under non-decreasing epochs, and the run's checkpoint the
/// sum of its partitions'.
fn assert_exactly_once(db: &TestDb, run: i64, quality: &BTreeSet<String>) {
    assert_eq!(status_of(db, run), "completed");
    let stored = tx(db, "SELECT string_agg(id, ',' ORDER BY id COLLATE \"C\") FROM documents").unwrap_or_default();
    let mut want: Vec<&str> = quality.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(stored, want.join(","), "stored ids are the quality conversations, none missing, none extra");
    assert_eq!(sc(db, "SELECT count(*) FROM documents WHERE write_count <> 1"), Some(0), "write_count = 1");
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE NOT done"), Some(0));
    assert_eq!(
        sc(db,
            "SELECT count(*) FROM run_partitions p
             WHERE p.commit_seq <> (SELECT count(*) FROM partition_commits c WHERE c.run_id = p.run_id AND c.name = p.name)
                OR p.commit_seq <> (SELECT coalesce(max(seq), 0) FROM partition_commits c
                                    WHERE c.run_id = p.run_id AND c.name = p.name)"
        ),
        Some(0),
        "each partition's commit sequence is 1..n without a gap or a repeat"
    );
    assert_eq!(
        sc(
            db,
            "SELECT count(*) FROM partition_commits a JOIN partition_commits b
             ON a.run_id = b.run_id AND a.name = b.name AND b.seq = a.seq + 1 WHERE b.epoch < a.epoch"
        ),
        Some(0),
        "no commit of an older epoch landed after one of a newer epoch"
    );
    assert_eq!(
        off_runtime(|| db.stored_in_checkpoint(run)),
        quality.len() as i64,
        "the run's checkpoint sums its partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_killed_and_frozen_store_each_conversation_once() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos seeded with SLUICE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    // 80 ms per LLM call, 2 at a time per partition: the run takes some seconds on 4 workers.
    let (intercom, openai) = fakes(2_400, 80).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    assert_eq!(sc(db, &format!("SELECT count(*) FROM run_partitions WHERE run_id = {run}")), Some(PARTITIONS as i64));

    let log = |i: usize, generation: usize| dir.path().join(format!("worker-{i}-{generation}.log"));
    // Worker 0 waits 300 ms before each commit, so a SIGSTOP almost surely finds it outside a transaction.
    let mut workers: Vec<Child> =
        (0..4).map(|i| spawn_worker(&intercom, &openai, &url, &log(i, 0), (i == 0).then_some(300))).collect();
    let mut generations = [0usize; 4];

    // The zombie: freeze worker 0 while batches of a partition it holds are
    // flowing (it committed one under its claim, so more are in flight and one
    // will reach the fence after the thaw), until another worker took that
    // partition over. A freeze that finds it with nothing in flight (between
    // partitions, or after its last batch) costs no commit; then again.
    let zombie_pid = workers[0].id().unwrap();
    let held = format!(
        "FROM run_partitions p WHERE p.owner LIKE '%:{zombie_pid}:%' AND NOT p.done AND p.lease_until > now()
           AND EXISTS (SELECT 1 FROM partition_commits c
                       WHERE c.run_id = p.run_id AND c.name = p.name AND c.epoch = p.epoch)"
    );
    let refused = format!("SELECT refused_commits FROM workers WHERE pid = {zombie_pid}");
    let mut late_commit_refused = false;
    for attempt in 0..6 {
        wait_for(60, "worker 0 to commit under a claim it holds", || {
            sc(db, &format!("SELECT count(*) {held}")) > Some(0)
        })
        .await;
        let before = tx(db, &format!("SELECT string_agg(p.name || ':' || p.epoch, ',') {held}")).unwrap_or_default();
        if before.is_empty() {
            continue;
        }
        signal(&workers[0], "-STOP");
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut taken_over = false;
        while Instant::now() < deadline && !taken_over {
            tokio::time::sleep(Duration::from_millis(100)).await;
            taken_over = before.split(',').any(|held| {
                let (name, epoch) = held.rsplit_once(':').unwrap();
                sc(db, &format!(
                    "SELECT count(*) FROM run_partitions WHERE run_id = {run} AND name = '{name}' AND epoch > {epoch}"
                )) == Some(1)
            });
        }
        signal(&workers[0], "-CONT");
        if !taken_over {
            eprintln!("attempt {attempt}: the frozen worker held a row lock (frozen inside a commit); again");
            continue;
        }
        eprintln!("attempt {attempt}: partitions {before} of the frozen worker were taken over");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !late_commit_refused {
            tokio::time::sleep(Duration::from_millis(100)).await;
            late_commit_refused = sc(db, &refused) >= Some(1);
        }
        if late_commit_refused {
            break;
        }
        eprintln!("attempt {attempt}: the thawed worker had nothing in flight to commit; again");
    }
    assert!(late_commit_refused, "the thawed worker attempted a late commit and it was refused");

    // SIGKILL the others at random (restarting them) until the run completes.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while status_of(db, run) != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete; worker logs in {}", dir.path().display());
        tokio::time::sleep(Duration::from_millis(rng.u64(600..1_500))).await;
        if kills < 6 && status_of(db, run) == "running" {
            let i = rng.usize(1..4);
            workers[i].start_kill().unwrap();
            workers[i].wait().await.unwrap();
            generations[i] += 1;
            workers[i] = spawn_worker(&intercom, &openai, &url, &log(i, generations[i]), None);
            kills += 1;
        }
    }
    stop_workers(&mut workers).await;
    eprintln!("{kills} workers killed");

    let zombie_log = std::fs::read_to_string(log(0, 0)).unwrap();
    assert!(zombie_log.contains("commit refused, lease lost"), "the refusal is in the thawed worker's log");
    // The refused batch's paid results are in the memo already (the worker writes them ahead as they arrive;
    // the salvage at the refusal keeps whatever was not): the bound on paid calls below shows none was paid again.
    assert_exactly_once(db, run, &quality);
    let refused_total = sc(db, "SELECT sum(refused_commits)::bigint FROM workers").unwrap_or(0);
    assert!(refused_total >= 1);
    // Paid calls beyond one per conversation come only from batches that never committed: those in flight
    // in a killed worker, or refused. Each partition engine holds at most 16 batches of 10 (see
    // Pipeline::max_batches_in_flight: 1 + (1+2) + (1+2) + 4 + 5), a worker 2 of them.
    let paid = openai.counters().chat_completions;
    let bound = quality.len() as u64 + (kills + refused_total as u64) * 2 * 16 * 10;
    eprintln!("{paid} LLM calls for {} conversations, {refused_total} refused commits", quality.len());
    assert!(paid >= quality.len() as u64 && paid <= bound, "{paid} LLM calls for {} conversations", quality.len());
    off_runtime(|| owned.cleanup());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_run_stops_resumes_and_runs_its_later_phases_in_id_ranges_then_one_task() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(600, 40).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), true);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    // The later phases are a plan (embeddings and facets in id ranges, themes and stories one task)
    // whose steps get their rows as the step before them ends.
    assert_eq!(sc(db, &format!("SELECT count(*) FROM run_phases WHERE run_id = {run}")), Some(3));
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE later"), Some(0));
    let mut workers: Vec<Child> =
        (0..2).map(|i| spawn_worker(&intercom, &openai, &url, &dir.path().join(format!("w{i}.log")), None)).collect();
    wait_for(60, "a first commit", || sc(db, "SELECT count(*) FROM partition_commits") > Some(0)).await;

    let mut stop = sluice();
    stop.args(["stop", "--db", &url, "--run-id", &run.to_string()]);
    let out = run_ok(&mut stop);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("run {run} is stopped")), "{}", stderr(&out));
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE lease_until > now() AND NOT done"), Some(0));
    let commits = sc(db, "SELECT count(*) FROM partition_commits");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sc(db, "SELECT count(*) FROM partition_commits"), commits, "nothing commits while stopped");

    let mut status = sluice();
    status.args(["status", &run.to_string(), "--db", &url]);
    let shown = String::from_utf8_lossy(&run_ok(&mut status).stdout).into_owned();
    assert!(
        shown.contains("status:   stopped") && shown.contains("partitions:") && shown.contains("2 alive"),
        "{shown}"
    );

    let mut resume = sluice_for(&intercom, &openai);
    resume.args(["run", "--distributed", "--resume-run-id", &run.to_string(), "--db", &url]);
    run_ok(&mut resume);
    wait_for(120, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;

    assert_exactly_once(db, run, &quality);
    let missing = |sql: &str| sc(db, &format!("SELECT count(*) FROM documents WHERE {sql} IS NULL"));
    assert_eq!(missing("embedding"), Some(0), "embedding_generation");
    assert_eq!(missing("annotations->'facets'->>'sentiment'"), Some(0), "facet_extraction");
    assert_eq!(missing("annotations->'theme'->>'id'"), Some(0), "theme_extraction");
    let themes = sc(db, &format!("SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'theme'"));
    assert!(themes.is_some_and(|n| (2..=6).contains(&n)), "{themes:?} themes");
    let big = sc(
        db,
        &format!(
            "SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'theme' AND (value->>'size')::int >= 5"
        ),
    );
    let stories = sc(db, &format!("SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'story'"));
    assert_eq!(stories, big, "one story per theme of at least 5");

    let mut status = sluice();
    status.args(["status", &run.to_string(), "--db", &url, "--json"]);
    let doc = json_stdout(&run_ok(&mut status));
    assert_eq!(doc["distributed"], true);
    let rows = doc["partitions"].as_array().unwrap();
    let of_phase = |phase: &str| rows.iter().filter(|p| p["phase"] == phase).count();
    assert_eq!(of_phase("embedding_generation"), PARTITIONS, "{doc}");
    assert_eq!(of_phase("facet_extraction"), PARTITIONS, "{doc}");
    assert_eq!(rows.len(), 3 * PARTITIONS + 1, "the source's partitions, two phases' ranges, one task: {doc}");
    assert!(rows.iter().all(|p| p["done"] == true), "{doc}");
    assert_eq!(rows.last().unwrap()["name"], "__phases__", "{doc}");
    assert_eq!(doc["current_phase"], "story_creation");
    off_runtime(|| owned.cleanup());
}

/// The embedding and facet phases are cut into id ranges shared by the workers; a worker SIGKILLed while it
/// holds an embedding range loses it to another, which goes on from the range's last commit: every document
/// is embedded once in the run's results, its phase counts sum to the documents, and embedding calls are paid
/// again only for the batches the kill had in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_phases_in_id_ranges_are_shared_and_a_range_of_a_killed_worker_is_taken_over() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(600, 20).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), true);
    // Fewer ranges than partitions: each is held longer, and the setting is what cuts them.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("phase = ", "phase_ranges = 6\nphase = ", 1)).unwrap();
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    let log = |i: usize, generation: usize| dir.path().join(format!("worker-{i}-{generation}.log"));
    // 200 ms before each commit: a range of a few batches is held for a second or more.
    let mut workers: Vec<Child> =
        (0..3).map(|i| spawn_worker(&intercom, &openai, &url, &log(i, 0), Some(200))).collect();
    let mut generations = [0usize; 3];

    let leased = format!(
        "SELECT owner || '|' || name || '|' || epoch FROM run_partitions WHERE run_id = {run}
         AND phase = 'embedding_generation' AND NOT done AND lease_until > now() ORDER BY name LIMIT 1"
    );
    let mut killed_in_range = None;
    for attempt in 0..5 {
        wait_for(120, "an embedding range to be leased", || tx(db, &leased).is_some()).await;
        let Some(held) = tx(db, &leased) else { continue };
        let mut parts = held.split('|');
        let (owner, name, epoch) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let pid: u32 = owner.split(':').nth(1).unwrap().parse().unwrap();
        let Some(i) = workers.iter().position(|w| w.id() == Some(pid)) else { continue };
        workers[i].start_kill().unwrap();
        workers[i].wait().await.unwrap();
        generations[i] += 1;
        workers[i] = spawn_worker(&intercom, &openai, &url, &log(i, generations[i]), Some(200));
        let row = format!("FROM run_partitions WHERE run_id = {run} AND name = '{name}'");
        if sc(db, &format!("SELECT count(*) {row} AND NOT done")) == Some(1) {
            eprintln!("attempt {attempt}: killed worker {i} (pid {pid}) holding range {name} at epoch {epoch}");
            killed_in_range = Some((row, epoch.parse::<i64>().unwrap()));
            break;
        }
        eprintln!("attempt {attempt}: range {name} was done before the kill landed; again");
    }
    let (row, epoch) = killed_in_range.expect("a worker was killed while it held an unfinished embedding range");
    wait_for(60, "the killed worker's range to be taken over and done", || {
        sc(db, &format!("SELECT count(*) {row} AND done AND epoch > {epoch}")) == Some(1)
    })
    .await;
    wait_for(180, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;

    assert_exactly_once(db, run, &quality);
    let in_run = |sql: &str| sc(db, &format!("SELECT count(*) FROM run_partitions WHERE run_id = {run} AND {sql}"));
    assert_eq!(in_run("phase = 'embedding_generation'"), Some(6), "phase_ranges embedding ranges");
    assert_eq!(in_run("phase = 'facet_extraction'"), Some(6), "facets in ranges too");
    assert_eq!(in_run("later AND phase IS NULL"), Some(1), "themes and stories: one task");
    assert_eq!(in_run("phase IS NOT NULL AND range_last IS NULL"), Some(2), "one open range per phase");
    let owners = sc(
        db,
        &format!(
            "SELECT count(DISTINCT c.owner) FROM partition_commits c JOIN run_partitions p USING (run_id, name)
             WHERE p.run_id = {run} AND p.phase = 'embedding_generation'"
        ),
    );
    assert!(owners > Some(1), "{owners:?} workers committed embedding ranges");
    let missing = |sql: &str| sc(db, &format!("SELECT count(*) FROM documents WHERE {sql} IS NULL"));
    assert_eq!(missing("embedding"), Some(0), "embedding_generation");
    assert_eq!(missing("annotations->'facets'->>'sentiment'"), Some(0), "facet_extraction");
    assert_eq!(missing("annotations->'theme'->>'id'"), Some(0), "theme_extraction");
    // The ranges' counts sum to the documents: none embedded twice in the run's results, none left out.
    let phase_stored = |phase: &str| {
        sc(
            db,
            &format!(
                "SELECT (checkpoint->'phase_counts'->'{phase}'->>'stored')::bigint FROM pipeline_runs WHERE id = {run}"
            ),
        )
    };
    assert_eq!(phase_stored("embedding_generation"), Some(quality.len() as i64));
    assert_eq!(phase_stored("facet_extraction"), Some(quality.len() as i64));
    // Embedding calls paid again only for what the killed worker had in flight (its two slots' batches).
    let counters = openai.counters();
    eprintln!(
        "{} inputs embedded ({} distinct, at most {} times one) for {} documents",
        counters.embedded_inputs,
        counters.distinct_embedding_inputs,
        counters.max_embedding_repeats,
        quality.len()
    );
    let embedded = counters.embedded_inputs;
    assert!(embedded >= quality.len() as u64, "{embedded} inputs embedded for {} documents", quality.len());
    let again = embedded - quality.len() as u64;
    assert!(again <= 2 * 16 * 10, "{again} inputs embedded again after one kill");

    // Status shows each row's phase and range, in text and JSON.
    let mut status = sluice();
    status.args(["status", &run.to_string(), "--db", &url]);
    let shown = String::from_utf8_lossy(&run_ok(&mut status).stdout).into_owned();
    eprintln!("{shown}");
    assert!(shown.contains("embedding_generation:1: done; ") && shown.contains("range=(start, \""), "{shown}");
    assert!(shown.contains("embedding_generation:6: done; ") && shown.contains(", end]"), "{shown}");
    status.arg("--json");
    let doc = json_stdout(&run_ok(&mut status));
    let rows = doc["partitions"].as_array().unwrap();
    let ranges: Vec<&serde_json::Value> = rows.iter().filter(|p| p["phase"] == "facet_extraction").collect();
    assert_eq!(ranges.len(), 6, "{doc}");
    assert!(ranges[0]["range_after"].is_null() && ranges[5]["range_last"].is_null(), "{doc}");
    assert!(ranges.windows(2).all(|w| w[0]["range_last"] == w[1]["range_after"]), "ranges meet: {doc}");
    assert!(rows.iter().all(|p| p["step"].is_i64()), "{doc}");
    off_runtime(|| owned.cleanup());
}

/// The theme results of the one run in `db` (`fitted_run` left out: it is the run's id) and each
/// document's theme annotation, one line each, in a fixed order.
fn themes_of(db: &TestDb) -> (String, String) {
    let results = tx(
        db,
        "SELECT string_agg(key || ' ' || (value - 'fitted_run')::text, E'\\n' ORDER BY key)
         FROM run_results WHERE kind = 'theme'",
    )
    .unwrap_or_default();
    let notes = tx(
        db,
        "SELECT string_agg(id || ' ' || ((annotations->'theme') - 'fitted_run')::text, E'\\n' ORDER BY id COLLATE \"C\")
         FROM documents",
    )
    .unwrap_or_default();
    (results, notes)
}

/// The issue's "what must be shown": the same pipeline with its later phases over the same data, once in one
/// process and once distributed over three workers (each in a database of its own), finds the same themes
/// (labels, terms, sizes, members, centroids) and puts every document in the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_run_finds_the_same_themes_as_a_single_process_run() {
    let Some(single) = off_runtime(TestDb::postgres) else { return };
    let Some(spread) = off_runtime(TestDb::postgres) else { return };
    let (intercom, openai) = fakes(300, 5).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), true);
    let url_of = |db: &TestDb| db.postgres_url().expect("a PostgreSQL test database").to_string();

    let mut one = sluice_for(&intercom, &openai);
    one.args(["run", "-c"]).arg(&config).args(["--db", &url_of(&single)]);
    run_ok(&mut one);
    assert_eq!(tx(&single, "SELECT status FROM pipeline_runs").as_deref(), Some("completed"));

    let url = url_of(&spread);
    let run = submit(&intercom, &openai, &config, &url);
    let mut workers: Vec<Child> =
        (0..3).map(|i| spawn_worker(&intercom, &openai, &url, &dir.path().join(format!("w{i}.log")), None)).collect();
    wait_for(120, "the distributed run to complete", || status_of(&spread, run) == "completed").await;
    stop_workers(&mut workers).await;
    assert_exactly_once(&spread, run, &quality);
    let owners = sc(&spread, "SELECT count(DISTINCT owner) FROM partition_commits");
    assert!(owners > Some(1), "{owners:?} workers committed: the run was shared");

    let (results, notes) = themes_of(&single);
    let themes = results.lines().count();
    assert!((2..=6).contains(&themes), "{themes} themes in the single-process run:\n{results}");
    assert_eq!(notes.lines().count(), quality.len(), "every document has a theme");
    assert!(notes.lines().all(|l| l.contains("\"id\": \"theme-")), "{notes}");
    let (spread_results, spread_notes) = themes_of(&spread);
    assert_eq!(spread_results, results, "the same themes");
    assert_eq!(spread_notes, notes, "each document in the same theme");
    off_runtime(|| single.cleanup());
    off_runtime(|| spread.cleanup());
}

/// A TCP proxy to PostgreSQL that can be cut: while cut it stops
/// forwarding in both directions without closing anything (a network
/// partition, not a reset), and forwards what it held once healed.
struct CutProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in
                    [(cr, sw), (sr, cw)].map(|(r, w)| (Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, w))
                {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown().await;
                    });
                }
            }
        });
        CutProxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_by_a_proxy_loses_its_partitions_and_writes_nothing_twice() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(1_200, 60).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    // The cut worker reaches PostgreSQL through the proxy; the other one directly.
    let (userinfo, rest) = url.split_once('@').expect("a postgres://user@host:port/db URL");
    let (hostport, database) = rest.split_once('/').unwrap();
    let upstream = tokio::net::lookup_host(hostport).await.unwrap().next().unwrap();
    let proxy = CutProxy::start(upstream).await;
    let via_proxy = format!("{userinfo}@127.0.0.1:{}/{database}", proxy.port);
    let cut_log = dir.path().join("cut.log");
    let mut workers = vec![
        spawn_worker(&intercom, &openai, &via_proxy, &cut_log, Some(300)),
        spawn_worker(&intercom, &openai, &url, &dir.path().join("direct.log"), None),
    ];
    let cut_pid = workers[0].id().unwrap();
    let held = format!(
        "SELECT string_agg(name || '|' || epoch, ',') FROM run_partitions
         WHERE owner LIKE '%:{cut_pid}:%' AND NOT done AND lease_until > now()"
    );
    wait_for(60, "the cut worker to hold a partition", || tx(db, &held).is_some()).await;
    let before = tx(db, &held).unwrap();
    proxy.set_cut(true);
    let taken_over = || {
        before.split(',').any(|p| {
            let (name, epoch) = p.rsplit_once('|').unwrap();
            sc(
                db,
                &format!(
                    "SELECT count(*) FROM run_partitions WHERE run_id = {run} AND name = '{name}' AND epoch > {epoch}"
                ),
            ) == Some(1)
        })
    };
    wait_for(30, "the direct worker to take a partition of the cut one over", taken_over).await;
    proxy.set_cut(false);
    wait_for(120, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;
    assert_exactly_once(db, run, &quality);
    let log = std::fs::read_to_string(&cut_log).unwrap();
    eprintln!(
        "cut worker: refused commits {:?}, lease lost in log: {}",
        sc(db, &format!("SELECT refused_commits FROM workers WHERE pid = {cut_pid}")),
        log.contains("lease lost")
    );
    assert!(log.contains("lease lost"), "the healed worker found its lease gone");
    off_runtime(|| owned.cleanup());
}

/// 4 workers against a fake OpenAI whose limit (fixed one-minute windows,
/// as the fake counts them) is below the conversations to classify: with
/// `requests_per_minute` under it, every worker draws from the run's one
/// bucket, so no window sees more than the rate plus its burst and the
/// fake answers no 429 at all, where 4 unpaced workers would pass the
/// limit within a second (BENCHMARKS.md has both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_llm_rate_limit_and_meet_no_429() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(300, 20).await;
    let quality = quality_ids(&intercom);
    let q = quality.len() as f64;
    // The fake's limit below the calls the run needs; the shared rate below that, burst (1 s of it) included.
    let limit = (q * 0.92).floor() as u32;
    let rate = (q * 0.85).floor();
    assert!(rate + rate / 60.0 < f64::from(limit) && f64::from(limit) < q);
    openai.set_rpm_limit(limit);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("concurrency = 2\n", &format!("concurrency = 2\nrequests_per_minute = {rate}\n")),
    )
    .unwrap();
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    let mut workers: Vec<Child> =
        (0..4).map(|i| spawn_worker(&intercom, &openai, &url, &dir.path().join(format!("w{i}.log")), None)).collect();
    wait_for(300, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;

    assert_exactly_once(db, run, &quality);
    let counters = openai.counters();
    eprintln!(
        "{} conversations, fake limit {limit}/min, shared rate {rate}/min: {} chat calls, {} 429s",
        quality.len(),
        counters.chat_completions,
        counters.rate_limited
    );
    assert_eq!(counters.rate_limited, 0, "no 429 with the shared limit");
    assert_eq!(counters.chat_completions, quality.len() as u64, "each conversation classified once");
    let service = format!("openai {}/v1 test-model", openai.base_url());
    let taken = sc(db, &format!("SELECT taken FROM rate_buckets WHERE run_id = {run} AND service = '{service}'"));
    assert!(taken >= Some(quality.len() as i64), "every call took its token from the run's one bucket: {taken:?}");
    let owners = sc(db, &format!("SELECT count(DISTINCT owner) FROM partition_commits WHERE run_id = {run}"));
    assert!(owners >= Some(2), "several workers shared the run: {owners:?}");
    off_runtime(|| owned.cleanup());
}

/// SIGKILLed workers (never stopped: no chance to commit or salvage)
/// cost the workers that take their partitions over no paid call that the
/// write-ahead had stored: each classification is in the memo before its
/// call's slot is freed, so a kill re-pays at most the calls in flight,
/// the LLM concurrency (2) times the partitions a worker holds (2 slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_paid_results_are_not_paid_again() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kills seeded with SLUICE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    // Slow calls, so a kill finds many classified but not yet committed.
    let (intercom, openai) = fakes(2_400, 120).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let run = submit(&intercom, &openai, &config, &url);
    let log = |i: usize, generation: usize| dir.path().join(format!("worker-{i}-{generation}.log"));
    let mut workers: Vec<Child> = (0..4).map(|i| spawn_worker(&intercom, &openai, &url, &log(i, 0), None)).collect();
    let mut generations = [0usize; 4];
    let mut kills = 0u64;
    let mut unstored_at_kill = 0u64;
    let deadline = Instant::now() + Duration::from_secs(240);
    while status_of(db, run) != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete; worker logs in {}", dir.path().display());
        tokio::time::sleep(Duration::from_millis(rng.u64(800..2_000))).await;
        if kills < 6 && status_of(db, run) == "running" {
            let i = rng.usize(0..4);
            let pid = workers[i].id().unwrap();
            workers[i].start_kill().unwrap();
            workers[i].wait().await.unwrap();
            // Paid for by the killed worker and in the memo, but not in a committed batch.
            let memo_only = sc(
                db,
                "SELECT count(*) FROM stage_results m WHERE m.stage = 'classify' AND NOT EXISTS
                 (SELECT 1 FROM documents d WHERE d.source = m.source AND d.id = m.id)",
            )
            .unwrap_or(0);
            eprintln!("killed worker {i} (pid {pid}); {memo_only} classifications in the memo, not yet committed");
            unstored_at_kill += memo_only as u64;
            generations[i] += 1;
            workers[i] = spawn_worker(&intercom, &openai, &url, &log(i, generations[i]), None);
            kills += 1;
        }
    }
    stop_workers(&mut workers).await;
    assert_exactly_once(db, run, &quality);
    let paid = openai.counters().chat_completions;
    let repaid = paid - quality.len() as u64;
    let in_flight_per_kill = 2 * 2;
    eprintln!(
        "{kills} kills: {paid} LLM calls for {} conversations ({repaid} paid again; \
         {unstored_at_kill} paid results were in the memo only at the kills)",
        quality.len()
    );
    assert!(kills >= 1, "the run outlived at least one kill");
    assert!(unstored_at_kill >= 1, "a kill found paid results not yet committed (else nothing was at stake)");
    assert!(repaid <= kills * in_flight_per_kill, "{repaid} calls paid again after {kills} kills");
    let stage_rows = sc(db, "SELECT count(*) FROM stage_results WHERE stage = 'classify'");
    assert_eq!(stage_rows, Some(quality.len() as i64), "one memo per conversation");
    off_runtime(|| owned.cleanup());
}

/// `sluice serve` of `config` on the store at `url`, with the fakes' URLs and credentials.
fn serve(intercom: &FakeIntercom, openai: &FakeOpenAi, config: &Path, url: &str) -> serve_kit::Server {
    let (base, openai_url) = (intercom.base_url().to_string(), format!("{}/v1", openai.base_url()));
    let env = [
        ("INTERCOM_BASE_URL", base.as_str()),
        ("INTERCOM_ACCESS_TOKEN", intercom.token()),
        ("OPENAI_BASE_URL", openai_url.as_str()),
        ("OPENAI_API_KEY", openai.key()),
    ];
    serve_kit::Server::start(config, Path::new(url), &env)
}

/// `POST /api/pipeline/stop` on a server that created a distributed run stops that run: its workers commit
/// what is in flight and release their leases, it ends `stopped` and nothing commits; resumed over HTTP, the
/// workers finish it with every conversation written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stops_the_distributed_run_it_created() {
    use serve_kit::post;
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(600, 60).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let server = serve(&intercom, &openai, &config, &url);
    let client = reqwest::Client::new();
    let (code, answer) =
        post(&client, &server.url("/api/pipeline/run"), serde_json::json!({"distributed": true})).await;
    assert_eq!(code, 200, "{answer}");
    let run = answer["run_id"].as_i64().unwrap();
    let mut workers: Vec<Child> =
        (0..2).map(|i| spawn_worker(&intercom, &openai, &url, &dir.path().join(format!("w{i}.log")), None)).collect();
    wait_for(60, "a first commit", || sc(db, "SELECT count(*) FROM partition_commits") > Some(0)).await;

    let (code, answer) = post(&client, &server.url("/api/pipeline/stop"), serde_json::json!({})).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "stopping", "{answer}");
    assert_eq!(answer["run_id"], run, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(&format!("distributed run {run}")), "{answer}");
    wait_for(60, "the run to be stopped", || status_of(db, run) == "stopped").await;
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE lease_until > now() AND NOT done"), Some(0));
    assert!(sc(db, "SELECT count(*) FROM run_partitions WHERE NOT done") > Some(0), "stopped before the end");
    let commits = sc(db, "SELECT count(*) FROM partition_commits");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sc(db, "SELECT count(*) FROM partition_commits"), commits, "nothing commits while stopped");
    let (code, answer) = post(&client, &server.url("/api/pipeline/stop"), serde_json::json!({})).await;
    assert_eq!(code, 404, "a stopped run is not stopped again: {answer}");

    let (code, answer) = post(
        &client,
        &server.url("/api/pipeline/run"),
        serde_json::json!({"distributed": true, "resume": true, "resume_run_id": run}),
    )
    .await;
    assert_eq!((code, answer["status"].as_str()), (200, Some("resumed")), "{answer}");
    wait_for(180, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;
    assert_exactly_once(db, run, &quality);
    drop(server);
    off_runtime(|| owned.cleanup());
}

/// `POST /api/pipeline/run {"distributed": true}` over real HTTP: the run
/// and its partitions are created for workers; the HTTP status and
/// `/metrics` show partitions and workers; once every worker is killed
/// the run stays `running` and both the HTTP status and `sluice status`
/// say no worker is alive and a new worker resumes it, which it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_creates_a_distributed_run_and_shows_its_partitions_workers_and_orphaning() {
    use serve_kit::{get, post};
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(1_200, 60).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = db.postgres_url().expect("a PostgreSQL test database").to_string();
    let server = serve(&intercom, &openai, &config, &url);
    let client = reqwest::Client::new();

    let (code, answer) =
        post(&client, &server.url("/api/pipeline/run"), serde_json::json!({"distributed": true})).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "started", "{answer}");
    assert_eq!(answer["partitions"], PARTITIONS, "{answer}");
    let run = answer["run_id"].as_i64().unwrap();
    assert!(answer["message"].as_str().unwrap().contains("sluice worker"), "{answer}");
    let (code, bad) = post(
        &client,
        &server.url("/api/pipeline/run"),
        serde_json::json!({"distributed": true, "max_conversations": 5}),
    )
    .await;
    assert_eq!(code, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("max_conversations"), "{bad}");

    let status = server.url(&format!("/api/pipeline/status/{run}"));
    let (_, doc) = get(&client, &status).await;
    assert_eq!(doc["distributed"], true, "{doc}");
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["partitions"].as_array().unwrap().len(), PARTITIONS, "{doc}");
    assert!(doc["partitions"].as_array().unwrap().iter().all(|p| p["done"] == false && p["owner"].is_null()));
    assert_eq!(doc["live_process"], false, "no worker yet: {doc}");
    assert!(doc["live_note"].as_str().unwrap().contains("no live worker"), "{doc}");

    // Two workers: the status shows who holds what, /metrics the same as gauges.
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut workers: Vec<Child> =
        (0..2).map(|i| spawn_worker(&intercom, &openai, &url, &log(&format!("w{i}")), Some(100))).collect();
    wait_for(60, "a first commit", || sc(db, "SELECT count(*) FROM partition_commits") > Some(0)).await;
    let (_, doc) = get(&client, &status).await;
    assert_eq!(doc["live_process"], true, "{doc}");
    assert!(doc.get("live_note").is_none(), "{doc}");
    let pids: Vec<String> = workers.iter().map(|w| w.id().unwrap().to_string()).collect();
    let shown = doc["workers"].as_array().unwrap();
    assert!(
        pids.iter().all(|pid| shown.iter().any(|w| w["pid"].as_i64() == pid.parse().ok() && w["alive"] == true)),
        "{doc}"
    );
    assert!(shown.iter().all(|w| w["heartbeat_age_secs"].as_f64().is_some()), "{doc}");
    let leased = doc["partitions"].as_array().unwrap().iter().filter(|p| p["lease_left_secs"].as_f64() > Some(0.0));
    assert!(leased.clone().count() >= 1, "{doc}");
    assert!(leased.clone().all(|p| pids.iter().any(|pid| p["owner"].as_str().unwrap().contains(&format!(":{pid}:")))));
    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let gauge = |name: &str, labels: &[String]| -> Option<f64> {
        metrics.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series.starts_with(&format!("{name}{{")) && labels.iter().all(|l| series.contains(l.as_str())))
                .then(|| value.parse().ok())?
        })
    };
    let run_label = format!("run_id=\"{run}\"");
    let leased_now = gauge("sluice_distributed_partitions", &[run_label.clone(), "state=\"leased\"".into()]);
    assert!(leased_now >= Some(1.0), "{leased_now:?} leased in /metrics:\n{metrics}");
    assert_eq!(gauge("sluice_distributed_workers", &["state=\"alive\"".into()]), Some(2.0), "{metrics}");
    for pid in &pids {
        let age = gauge("sluice_worker_heartbeat_age_seconds", &[format!(":{pid}:")]);
        assert!(age.is_some_and(|a| a >= 0.0), "worker {pid} in /metrics:\n{metrics}");
    }
    assert!(gauge("sluice_distributed_partition_commits", std::slice::from_ref(&run_label)).is_some(), "{metrics}");
    assert!(gauge("sluice_distributed_partition_leased", &[run_label, "worker=".into()]).is_some(), "{metrics}");

    // Every worker killed: nothing marks the run, but the status says why it does not move and what to do.
    for w in workers.iter_mut() {
        w.start_kill().unwrap();
        w.wait().await.unwrap();
    }
    let alive = "SELECT count(*) FROM workers WHERE stopped_at IS NULL
                 AND last_heartbeat > now() - make_interval(secs => lease_secs)";
    wait_for(30, "the killed workers' heartbeats to run out", || sc(db, alive) == Some(0)).await;
    let (_, doc) = get(&client, &status).await;
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["live_process"], false, "{doc}");
    assert!(doc["live_note"].as_str().unwrap().contains("resumable by starting a worker"), "{doc}");
    let mut cli = sluice();
    cli.args(["status", &run.to_string(), "--db", &url]);
    let shown = String::from_utf8_lossy(&run_ok(&mut cli).stdout).into_owned();
    assert!(shown.contains("running (no live worker: resumable by starting a worker"), "{shown}");
    assert!(shown.contains("0 alive of 2"), "{shown}");

    // A new worker takes the run over from the partitions' last commits.
    let mut workers = vec![spawn_worker(&intercom, &openai, &url, &log("again"), None)];
    wait_for(180, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;
    assert_exactly_once(db, run, &quality);
    let (_, doc) = get(&client, &status).await;
    assert_eq!(doc["status"], "completed");
    assert!(doc["partitions"].as_array().unwrap().iter().all(|p| p["done"] == true), "{doc}");
    drop(server);
    off_runtime(|| owned.cleanup());
}

/// A SQLite store answers `{"distributed": true}` with 422 and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_a_distributed_run_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 10, 0);
    let server = serve_kit::Server::start(&config, &dir.path().join("x.db"), &[]);
    let client = reqwest::Client::new();
    let (code, answer) =
        serve_kit::post(&client, &server.url("/api/pipeline/run"), serde_json::json!({"distributed": true})).await;
    assert_eq!(code, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("distributed runs need the PostgreSQL store") && error.contains("SQLite"), "{answer}");
    let (_, history) = serve_kit::get(&client, &server.url("/api/pipeline/history")).await;
    assert_eq!(history["runs"].as_array().map(Vec::len), Some(0), "nothing was created: {history}");
}

#[test]
fn sqlite_refuses_to_distribute() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 10, 0);
    let out = sluice()
        .args(["run", "--distributed", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("distributed runs need the PostgreSQL store"), "{}", stderr(&out));
    let out = sluice().args(["worker", "--store", "sqlite:x.db"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("distributed runs need the PostgreSQL store"), "{}", stderr(&out));
}
