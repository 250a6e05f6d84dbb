//! The dead-letter queue: records a stage could not handle are kept with the
//! record, and `sluice failures retry RUN_ID` runs just those records through
//! the run's pipeline again, marking each stored one resolved.

mod common;

use common::*;
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_are_listed_and_a_retry_resolves_them() {
    // Every answer is malformed: each record fails in classify after its tries.
    let faults = OpenAiFaults { malformed_every: Some(1), ..OpenAiFaults::default() };
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("llm.toml");
    std::fs::write(
        &config,
        "name = \"llm\"\nbatch_size = 20\n[source]\nkind = \"generate\"\ncount = 60\n\n\
         [[stages]]\nkind = \"classify\"\nprovider = \"llm\"\nmodel = \"test-model\"\nmax_attempts = 1\n\
         categories = [\"billing\", \"bug\", \"other\"]\n",
    )
    .unwrap();
    let db_path = dir.path().join("dlq.db");
    let with_llm = |cmd: &mut std::process::Command| {
        cmd.env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url())).env("OPENAI_API_KEY", openai.key());
    };

    let mut run = sluice();
    run.args(["run", "-q", "--json", "-c"]).arg(&config).arg("--db").arg(&db_path);
    with_llm(&mut run);
    let out = tokio::task::spawn_blocking(move || run.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed", "per-record failures do not fail the run");
    assert_eq!(summary["counts"]["failed"], 60);
    assert_eq!(summary["counts"]["stored"], 0);

    let failures = json_stdout(&run_ok(sluice().args(["failures", "1", "--json", "--db"]).arg(&db_path)));
    let failures = failures.as_array().unwrap();
    assert_eq!(failures.len(), 60);
    assert!(failures.iter().all(|f| f["stage"] == "classify" && f["has_record"] == true && f["resolved_by"].is_null()));

    // The LLM is healthy again: retry just those records.
    openai.set_faults(OpenAiFaults::default());
    let calls_before = openai.counters().chat_completions;
    let mut retry = sluice();
    retry.args(["failures", "retry", "1", "--json", "--db"]).arg(&db_path);
    with_llm(&mut retry);
    let out = tokio::task::spawn_blocking(move || retry.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result = json_stdout(&out);
    assert_eq!(result["resolved"], 60);
    let retry_run = result["retry_run_id"].as_i64().unwrap();
    assert_ne!(retry_run, 1, "the retry is a run of its own; run 1's checkpoint is untouched");
    assert_eq!(openai.counters().chat_completions - calls_before, 60, "only the failed records were sent again");

    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents WHERE category IS NOT NULL"), 60);
    let failures = json_stdout(&run_ok(sluice().args(["failures", "1", "--json", "--db"]).arg(&db_path)));
    assert!(failures.as_array().unwrap().iter().all(|f| f["resolved_by"] == retry_run));

    // Nothing left: a second retry has nothing to do.
    let mut again = sluice();
    again.args(["failures", "retry", "1", "--db"]).arg(&db_path);
    with_llm(&mut again);
    let out = tokio::task::spawn_blocking(move || again.output().unwrap()).await.unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("nothing to retry"), "{}", stderr(&out));
}
