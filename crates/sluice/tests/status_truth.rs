//! What sluice says about a run is true and can be followed: the start line
//! names the store and the run, the hint after a stop resumes when run as
//! printed, a run with no process behind it says so, a run that committed
//! nothing is told to start anew, failed records are never silent, and
//! read-only commands never create a database.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

fn spawn(config: &Path, db: &Path, events_out: &Path) -> Child {
    sluice()
        .args(["run", "-q", "--no-document-events", "-c"])
        .arg(config)
        .arg("--db")
        .arg(db)
        .arg("--events-out")
        .arg(events_out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_commits(events_out: &Path, n: usize) {
    let started = Instant::now();
    while count_type(&events(events_out), "BatchCommitted") < n {
        assert!(started.elapsed() < Duration::from_secs(60), "no commits");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_run_row(db_path: &Path) {
    let started = Instant::now();
    while !(db_path.exists()
        && db(db_path)
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'pipeline_runs'", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            > 0
        && count(&db(db_path), "SELECT COUNT(*) FROM pipeline_runs") > 0)
    {
        assert!(started.elapsed() < Duration::from_secs(60), "no run row");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    let kill = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The command between the backticks after `marker` in `log`.
fn quoted_command(log: &str, marker: &str) -> Vec<String> {
    let tail = &log[log.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {log}")) + marker.len()..];
    let command = tail.split('`').nth(1).unwrap_or_else(|| panic!("no command after {marker:?}: {log}"));
    command.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_start_line_names_the_store_and_the_stop_hint_resumes_when_followed_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 4_000, 50, 20);
    let db_path = dir.path().join("hint.db");
    let ev = dir.path().join("ev.jsonl");
    let child = spawn(&config, &db_path, &ev);
    wait_for_commits(&ev, 3);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains(&format!("run 1 (new) in sqlite:{}", db_path.display())), "{log}");
    let resume = quoted_command(&log, "Resume with ");
    assert_eq!(
        resume[..],
        [
            "sluice".to_string(),
            "run".into(),
            "-c".into(),
            config.display().to_string(),
            "--db".into(),
            db_path.display().to_string(),
            "--resume-run-id".into(),
            "1".into()
        ]
    );
    let committed = count(&db(&db_path), "SELECT COUNT(*) FROM documents");

    // Followed as printed, from another directory: it resumes run 1 in the same store.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_ok(sluice().args(&resume[1..]).arg("-q").current_dir(elsewhere.path()));
    let log = stderr(&out);
    assert!(log.contains(&format!("run 1 resumed from {committed} committed records")), "{log}");
    assert_eq!(count(&db(&db_path), "SELECT COUNT(*) FROM documents"), 4_000);
    assert!(!elsewhere.path().join("sluice.db").exists(), "no other store was created");
    let status = stdout(&run_ok(sluice().args(["status", "1", "--db"]).arg(&db_path)));
    assert!(status.contains("status:   completed"), "{status}");
}

#[test]
fn a_killed_run_has_no_live_process_and_one_killed_before_its_first_commit_is_told_to_start_anew() {
    let dir = tempfile::tempdir().unwrap();
    // Pages of 3 s: the kill lands before the first commit.
    let config = generate_pipeline(dir.path(), 200, 50, 3_000);
    let db_path = dir.path().join("killed.db");
    let ev = dir.path().join("ev.jsonl");
    let mut child = spawn(&config, &db_path, &ev);
    wait_for_run_row(&db_path);
    let live = stdout(&run_ok(sluice().args(["status", "1", "--db"]).arg(&db_path)));
    assert!(live.contains("status:   running\n"), "a live run is just running: {live}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(count(&db(&db_path), "SELECT COUNT(*) FROM documents"), 0, "killed before its first commit");

    let status = stdout(&run_ok(sluice().args(["status", "1", "--db"]).arg(&db_path)));
    assert!(status.contains("running (no live process, nothing committed: start a new run)"), "{status}");
    let doc = json_stdout(&run_ok(sluice().args(["status", "1", "--json", "--db"]).arg(&db_path)));
    assert_eq!((doc["status"].as_str(), doc["live_process"].as_bool()), (Some("running"), Some(false)));
    let refused =
        sluice().args(["run", "--resume-run-id", "1", "-c"]).arg(&config).arg("--db").arg(&db_path).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("start a new run"), "{}", stderr(&refused));
    let error: String =
        db(&db_path).query_row("SELECT error FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert!(error.contains("before its first commit; start a new run"), "{error}");

    // A run killed after committing is resumable, and every reader says its process is gone.
    let config = generate_pipeline(dir.path(), 4_000, 50, 20);
    let ev = dir.path().join("ev2.jsonl");
    let mut child = spawn(&config, &db_path, &ev);
    wait_for_commits(&ev, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let status = stdout(&run_ok(sluice().args(["status", "2", "--db"]).arg(&db_path)));
    assert!(status.contains("status:   running (no live process: resumable)"), "{status}");
    let runs = stdout(&run_ok(sluice().args(["runs", "--db"]).arg(&db_path)));
    assert!(runs.contains("running (no live process: resumable)"), "{runs}");
}

#[test]
fn a_stop_before_the_first_commit_says_start_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 200, 50, 3_000);
    let db_path = dir.path().join("early.db");
    let child = spawn(&config, &db_path, &dir.path().join("ev.jsonl"));
    wait_for_run_row(&db_path);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    if count(&db(&db_path), "SELECT COUNT(*) FROM documents") > 0 {
        // The stop waited for the page in flight, which committed: then it is resumable.
        assert!(log.contains("Resume with `sluice run -c"), "{log}");
        return;
    }
    assert!(log.contains("Nothing was committed: start a new run with `sluice run -c"), "{log}");
    assert!(!log.contains("--resume-run-id"), "{log}");
}

#[test]
fn read_only_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    // (`events` reads an events file, not a store.)
    for args in [vec!["runs"], vec!["status", "1"], vec!["failures", "1"]] {
        let out = sluice().args(&args).arg("--db").arg(format!("sqlite:{}", typo.display())).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no database at"), "{args:?}: {}", stderr(&out));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn a_store_from_database_url_is_announced_and_sluice_database_url_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let (app, mine) = (dir.path().join("app.db"), dir.path().join("mine.db"));
    let out = run_ok(
        sluice()
            .args(["run", "-q", "-c"])
            .arg(&config)
            .env("DATABASE_URL", format!("sqlite:{}", app.display()))
            .env_remove("SLUICE_DATABASE_URL"),
    );
    assert!(stderr(&out).contains(&format!("in sqlite:{} (from $DATABASE_URL)", app.display())), "{}", stderr(&out));
    let out = run_ok(
        sluice()
            .args(["run", "-q", "-c"])
            .arg(&config)
            .env("DATABASE_URL", format!("sqlite:{}", app.display()))
            .env("SLUICE_DATABASE_URL", format!("sqlite:{}", mine.display())),
    );
    assert!(
        stderr(&out).contains(&format!("in sqlite:{} (from $SLUICE_DATABASE_URL)", mine.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&db(&mine), "SELECT COUNT(*) FROM documents"), 100);
    assert_eq!(count(&db(&app), "SELECT COUNT(*) FROM pipeline_runs"), 1, "the app's store got only the first run");
}

#[test]
fn resuming_a_run_of_another_pipeline_is_refused_unless_forced_and_runs_filter_by_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 4_000, 50, 20);
    let db_path = dir.path().join("two.db");
    let ev = dir.path().join("ev.jsonl");
    let child = spawn(&config, &db_path, &ev);
    wait_for_commits(&ev, 2);
    signal(&child, "TERM");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(3));
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("name = \"gen\"", "name = \"other\"");
    std::fs::write(&other, text.replace("count = 4000", "count = 60")).unwrap();
    run_ok(sluice().args(["run", "-q", "-c"]).arg(&other).arg("--db").arg(&db_path));

    let out = sluice()
        .args(["run", "-q", "--resume-run-id", "1", "-c"])
        .arg(&other)
        .arg("--db")
        .arg(&db_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run 1 belongs to pipeline \"gen\", not \"other\""), "{}", stderr(&out));
    run_ok(sluice().args(["run", "-q", "--force", "--resume-run-id", "1", "-c"]).arg(&other).arg("--db").arg(&db_path));
    let status: String =
        db(&db_path).query_row("SELECT status FROM pipeline_runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "completed", "forced, it resumed with its own saved settings");
    assert_eq!(count(&db(&db_path), "SELECT COUNT(*) FROM documents"), 4_000);

    let runs = stdout(&run_ok(sluice().args(["runs", "--pipeline", "other", "--db"]).arg(&db_path)));
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 2, "a header and run 2: {runs}");
    assert!(lines[1].contains("other") && !runs.contains(" gen "), "{runs}");
    // Aligned: each column starts where its header does.
    let all = stdout(&run_ok(sluice().args(["runs", "--db"]).arg(&db_path)));
    let header = all.lines().next().unwrap();
    let at = header.find("status").unwrap();
    for line in all.lines().skip(1) {
        assert!(line[at..].starts_with("completed"), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_are_in_the_last_line_and_status_and_fail_on_failures_exits_5() {
    let faults = OpenAiFaults { malformed_every: Some(3), ..OpenAiFaults::default() };
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("llm.toml");
    std::fs::write(
        &config,
        "name = \"llm\"\nbatch_size = 20\n[source]\nkind = \"generate\"\ncount = 60\n\n\
         [[stages]]\nkind = \"classify\"\nprovider = \"llm\"\nmodel = \"gpt-4o-mini\"\nmax_attempts = 1\n\
         categories = [\"billing\", \"bug\", \"other\"]\n",
    )
    .unwrap();
    let db_path = dir.path().join("failed.db");
    let base = format!("{}/v1", openai.base_url());
    let key = openai.key().to_string();
    let run = move |extra: &'static [&'static str], db_path: std::path::PathBuf, config: std::path::PathBuf| {
        let (base, key) = (base.clone(), key.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                sluice()
                    .args(["run", "-q"])
                    .args(extra)
                    .arg("-c")
                    .arg(&config)
                    .arg("--db")
                    .arg(&db_path)
                    .env("OPENAI_BASE_URL", base)
                    .env("OPENAI_API_KEY", key)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(&[], db_path.clone(), config.clone()).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "without the flag a run with failed records completes: {log}");
    let last = log.lines().find(|l| l.starts_with("run 1 completed")).unwrap_or_else(|| panic!("{log}"));
    let failed = count(&db(&db_path), "SELECT COUNT(*) FROM failures");
    assert!(failed > 0, "the fake's malformed answers fail records");
    assert!(last.contains(&format!("FAILED records: ingest={failed}")), "{last}");
    assert!(last.contains("llm_calls=") && last.contains("tokens_in=") && last.contains("cost ≈ $"), "{last}");

    let status = stdout(&run_ok(sluice().args(["status", "1", "--db"]).arg(&db_path)));
    assert!(status.contains(&format!("failures: FAILED records: ingest={failed}")), "{status}");
    assert!(status.contains("cost ≈ $") && status.contains("default prices"), "{status}");
    let doc = json_stdout(&run_ok(sluice().args(["status", "1", "--json", "--db"]).arg(&db_path)));
    assert_eq!(doc["failed_by_phase"]["ingest"], failed);
    assert!(doc["cost_usd"].as_f64().is_some_and(|usd| usd > 0.0), "{doc}");

    let out = run(&["--fail-on-failures"], dir.path().join("again.db"), config.clone()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}
