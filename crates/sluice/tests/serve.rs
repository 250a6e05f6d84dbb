//! `sluice serve` as the runbooks operate it, with a real HTTP client against
//! the real binary: start, poll, stop, history, resume by days and by id,
//! errors, auth, the live event stream, metrics, and a server killed mid-run.

mod common;
mod serve_kit;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use serve_kit::*;

const RECORDS: i64 = 8_000;

#[tokio::test]
async fn runbook_flow_start_poll_stop_history_resume_by_days_and_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), RECORDS as u64, 50, 10);
    append(&config, ALL_PHASES);
    let db_path = dir.path().join("serve.db");
    let server = Server::start(&config, &db_path, &[]);
    let client = reqwest::Client::new();

    let (code, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!((code, active["active"].clone()), (200, json!(false)));

    let (code, started) =
        post(&client, &server.url("/api/pipeline/run"), json!({"days": 90, "auto_create_stories": true})).await;
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["status"], "started");
    let run = started["run_id"].as_i64().unwrap();
    assert!(started["message"].as_str().unwrap().contains(&format!("run {run}")));

    wait_stored(&client, &server, run, 200).await;
    // Live stats while it runs: /metrics follows the run's commits.
    let started_polling = Instant::now();
    loop {
        let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if gauge(&metrics, "sluice_run_records{counter=\"stored\"}").is_some_and(|stored| stored >= 200.0) {
            break;
        }
        assert!(started_polling.elapsed() < Duration::from_secs(60), "no live stored count: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, doc) = get(&client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
    for field in [
        "run_id",
        "status",
        "current_phase",
        "conversations_fetched",
        "conversations_classified",
        "conversations_stored",
        "checkpoint",
    ] {
        assert!(doc.get(field).is_some(), "status lacks {field}: {doc}");
    }
    assert_eq!(doc["checkpoint"]["counts"]["stored"], doc["conversations_stored"]);
    let (_, same) = get(&client, &server.url(&format!("/api/pipeline/{run}"))).await;
    assert_eq!(same["run_id"], doc["run_id"]);
    let (_, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!((active["active"].clone(), active["run_id"].clone()), (json!(true), json!(run)));

    // One active run at a time.
    let (code, busy) = post(&client, &server.url("/api/pipeline/run"), json!({"days": 30})).await;
    assert_eq!(code, 409, "{busy}");
    assert_eq!(busy["detail"]["active_run_id"], run);

    // Stop: stopping, then stopped with a checkpoint.
    let (code, stopping) = post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    assert_eq!((code, stopping["status"].clone()), (200, json!("stopping")));
    let stopped = wait_status(&client, &server, run, "stopped").await;
    let stored_at_stop = stopped["conversations_stored"].as_i64().unwrap();
    assert!(stored_at_stop > 0 && stored_at_stop < RECORDS, "{stopped}");

    let (code, history) = get(&client, &server.url("/api/pipeline/history?limit=5")).await;
    assert_eq!(code, 200);
    assert_eq!(history["runs"][0]["run_id"], run);
    assert_eq!(history["runs"][0]["status"], "stopped");

    // Same-day resume by date range: the ORIGINAL run id continues.
    let (code, resumed) = post(&client, &server.url("/api/pipeline/run"), json!({"days": 90, "resume": true})).await;
    assert_eq!(code, 200, "{resumed}");
    assert_eq!((resumed["status"].clone(), resumed["run_id"].clone()), (json!("resumed"), json!(run)));
    wait_stored(&client, &server, run, stored_at_stop + 200).await;
    post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    wait_status(&client, &server, run, "stopped").await;

    // A different range finds nothing to resume; resume by id bypasses date matching.
    let (code, none) = post(&client, &server.url("/api/pipeline/run"), json!({"days": 7, "resume": true})).await;
    assert_eq!(code, 400, "{none}");
    assert!(none["error"].as_str().unwrap().contains("No resumable run found"), "{none}");
    let (code, resumed) =
        post(&client, &server.url("/api/pipeline/run"), json!({"resume": true, "resume_run_id": run})).await;
    assert_eq!(code, 200, "{resumed}");
    assert_eq!(resumed["run_id"], run);
    let done = wait_status(&client, &server, run, "completed").await;
    assert_eq!(done["conversations_stored"], RECORDS);
    assert_eq!(done["checkpoint"]["counts"]["stored"], RECORDS);

    // A completed run cannot be resumed.
    let (code, err) =
        post(&client, &server.url("/api/pipeline/run"), json!({"resume": true, "resume_run_id": run})).await;
    assert_eq!(code, 400);
    assert!(err["error"].as_str().unwrap().contains("completed"), "{err}");

    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), RECORDS);
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), RECORDS, "every record stored exactly once");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM pipeline_runs"), 1, "resumes continued the original run");

    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("sluice_records_total{{counter=\"stored\"}} {RECORDS}")), "{metrics}");
    assert!(metrics.contains("sluice_batch_commit_seconds"), "{metrics}");
    // The run's live stats: its cumulative counts, as its checkpoint holds them.
    for counter in ["fetched", "stored", "chunks", "embedded", "failed"] {
        let want = done["checkpoint"]["counts"][counter].as_f64().unwrap();
        assert_eq!(gauge(&metrics, &format!("sluice_run_records{{counter=\"{counter}\"}}")), Some(want), "{metrics}");
    }
}

/// The value of a metric line of the Prometheus text format.
fn gauge(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server = Server::start(&config, &dir.path().join("e.db"), &[]);
    let client = reqwest::Client::new();
    let url = server.url("/api/pipeline/run");
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "not a valid run request"),
        (r#"{"days": "ninety"}"#, 400, "not a valid run request"),
        (r#"{"dayz": 3}"#, 400, "not a valid run request"),
        (r#"{"days": -5}"#, 400, "days = -5 is out of range"),
        (r#"{"days": 0}"#, 400, "out of range"),
        (r#"{"days": 3, "date_from": "2025-01-01", "date_to": "2025-02-01"}"#, 400, "either days or date_from"),
        (r#"{"date_from": "2025-02-30", "date_to": "2025-03-01"}"#, 400, "is not a date"),
        (r#"{"date_from": "2025-03-01", "date_to": "2025-02-01"}"#, 400, "is after"),
        (r#"{"resume": true}"#, 400, "needs days"),
        (r#"{"resume_run_id": 3}"#, 400, "only used with resume=true"),
        // The runbook: "If no matching run found, you'll get a 400 error".
        (r#"{"resume": true, "resume_run_id": 77}"#, 400, "run 77 not found"),
        (r#"{"max_conversations": 0}"#, 400, "at least 1"),
    ];
    for (body, want, needle) in cases {
        let resp = client.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        let code = resp.status().as_u16();
        let json: Value = resp.json().await.unwrap();
        assert_eq!(code, want, "{body} -> {json}");
        let text = format!("{} {}", json["error"], json["detail"]);
        assert!(text.contains(needle), "{body}: expected {needle:?} in {json}");
    }
    for (path, want) in [
        ("/api/pipeline/history?limit=0", 400),
        ("/api/pipeline/history?limit=1000", 400),
        ("/api/pipeline/history?limit=x", 400),
        ("/api/pipeline/history?lim=3", 400),
        ("/api/pipeline/status/abc", 400),
        ("/api/pipeline/status/-1", 400),
        ("/api/pipeline/status/4242", 404),
        ("/api/pipeline/4242", 404),
        ("/api/pipeline/4242/events", 404),
        ("/no/such/thing", 404),
    ] {
        let (code, json) = get(&client, &server.url(path)).await;
        assert_eq!(code, want, "{path} -> {json}");
        assert!(json["error"].is_string(), "{path}: JSON error body expected, got {json}");
    }
    let (code, json) = post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    assert_eq!(code, 404, "{json}");
    let (code, dry) = post(&client, &url, json!({"days": 3, "dry_run": true})).await;
    assert_eq!((code, dry["status"].clone()), (200, json!("dry_run")));
    let (_, history) = get(&client, &server.url("/api/pipeline/history")).await;
    assert_eq!(history["runs"], json!([]), "no bad request created a run");

    let doc: Value = client.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in [
        "/api/pipeline/run",
        "/api/pipeline/status/{run_id}",
        "/api/pipeline/active",
        "/api/pipeline/history",
        "/api/pipeline/stop",
        "/api/pipeline/{run_id}/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[tokio::test]
async fn a_token_guards_mutations_and_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 200, 50, 0);
    let secret = "s3cret-token-value";
    let server = Server::start(&config, &dir.path().join("t.db"), &[("SLUICE_API_TOKEN", secret)]);
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut req = client.post(server.url("/api/pipeline/run")).json(&json!({}));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body = resp.text().await.unwrap();
        assert!(!body.contains(secret));
    }
    let (code, _) = get(&client, &server.url("/api/pipeline/history")).await;
    assert_eq!(code, 200, "reads need no token");
    let resp = client
        .post(server.url("/api/pipeline/run"))
        .header("authorization", format!("Bearer {secret}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Binding beyond loopback without a token is refused at start.
    let out = sluice()
        .args(["serve", "--bind", "0.0.0.0:0", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("u.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SLUICE_API_TOKEN"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_event_stream_delivers_run_started_through_run_finished() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 1_000, 50, 5);
    let server = Server::start(&config, &dir.path().join("sse.db"), &[]);
    let client = reqwest::Client::new();
    let (_, started) = post(&client, &server.url("/api/pipeline/run"), json!({})).await;
    let run = started["run_id"].as_i64().unwrap();
    let body = tokio::time::timeout(
        Duration::from_secs(60),
        client.get(server.url(&format!("/api/pipeline/{run}/events"))).send().await.unwrap().text(),
    )
    .await
    .expect("the stream ends after RunFinished")
    .unwrap();
    let events: Vec<Value> =
        body.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events.first().unwrap()["type"], "RunStarted");
    assert_eq!(events.last().unwrap()["type"], "RunFinished");
    assert_eq!(events.last().unwrap()["status"], "completed");
    let committed = events.iter().filter(|e| e["type"] == "BatchCommitted").count();
    assert_eq!(committed, 20);
}

#[tokio::test]
async fn a_server_killed_mid_run_leaves_a_resumable_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), RECORDS as u64, 50, 10);
    let db_path = dir.path().join("kill.db");
    let client = reqwest::Client::new();
    let run = {
        let server = Server::start(&config, &db_path, &[]);
        let (_, started) = post(&client, &server.url("/api/pipeline/run"), json!({"days": 90})).await;
        let run = started["run_id"].as_i64().unwrap();
        wait_stored(&client, &server, run, 500).await;
        run
        // Dropping the server sends SIGKILL.
    };
    let server = Server::start(&config, &db_path, &[]);
    let (_, doc) = get(&client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("resume"), "{doc}");
    assert!(doc["checkpoint"]["counts"]["stored"].as_i64().unwrap() >= 500);
    let (_, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!(active["active"], false);
    let (code, resumed) =
        post(&client, &server.url("/api/pipeline/run"), json!({"resume": true, "resume_run_id": run})).await;
    assert_eq!(code, 200, "{resumed}");
    wait_status(&client, &server, run, "completed").await;
    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), RECORDS);
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), RECORDS);
}

#[tokio::test]
async fn cli_companions_talk_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), RECORDS as u64, 50, 10);
    let server = Server::start(&config, &dir.path().join("cli.db"), &[]);
    let client = reqwest::Client::new();
    let (_, started) = post(&client, &server.url("/api/pipeline/run"), json!({})).await;
    let run = started["run_id"].as_i64().unwrap();
    wait_stored(&client, &server, run, 100).await;

    let out = run_ok(sluice().args(["stop", "--server", &server.base]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("run {run} will stop")));
    wait_status(&client, &server, run, "stopped").await;
    let doc = json_stdout(&run_ok(sluice().args(["status", &run.to_string(), "--json", "--server", &server.base])));
    assert_eq!(doc["status"], "stopped");
    let runs = json_stdout(&run_ok(sluice().args(["runs", "--json", "--server", &server.base])));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let out = sluice().args(["stop", "--server", &server.base]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "nothing to stop: {}", stderr(&out));
    let out = sluice().args(["status", "999", "--server", &server.base]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run 999 not found"), "{}", stderr(&out));
}

/// The intercom runbook's commands in order, against the test kit's fake
/// Intercom and fake LLM: start a 90-day backfill, poll, stop, find it in the
/// history, resume by days, stop again, resume by id, wait for completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercom_runbook_against_the_fakes() {
    use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, Theme};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let faults = IntercomFaults { latency_ms: 15, ..IntercomFaults::default() };
    let intercom = FakeIntercom::start(
        IntercomConfig::default().with_conversations(2_500).with_days(60).with_now(now).with_faults(faults),
    )
    .await
    .unwrap();
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    let config = dir.path().join("intercom.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"backfill\"\nbatch_size = 50\nphase = \"classification\"\n\n[source]\nkind = \"intercom\"\ndays = 90\nper_page = 50\n\n\
             [[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"classify\"\nprovider = \"llm\"\nmodel = \"test-model\"\ncategories = [{}]\n{ALL_PHASES}",
            categories.join(", ")
        ),
    )
    .unwrap();
    let db_path = dir.path().join("intercom.db");
    let openai_url = format!("{}/v1", openai.base_url());
    let intercom_url = intercom.base_url();
    let server = Server::start(
        &config,
        &db_path,
        &[
            ("INTERCOM_BASE_URL", &intercom_url),
            ("INTERCOM_ACCESS_TOKEN", intercom.token()),
            ("OPENAI_BASE_URL", &openai_url),
            ("OPENAI_API_KEY", openai.key()),
        ],
    );
    let client = reqwest::Client::new();
    let (_, active) = get(&client, &server.url("/api/pipeline/active")).await;
    assert_eq!(active["active"], false);
    let (code, started) =
        post(&client, &server.url("/api/pipeline/run"), json!({"days": 90, "auto_create_stories": true})).await;
    assert_eq!((code, started["status"].clone()), (200, json!("started")), "{started}");
    let run = started["run_id"].as_i64().unwrap();
    wait_stored(&client, &server, run, 300).await;
    let (_, doc) = get(&client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
    assert_eq!(doc["current_phase"], "classification");
    assert!(doc["checkpoint"].get("intercom_cursor").is_some(), "{doc}");
    assert_eq!(doc["conversations_classified"], doc["checkpoint"]["counts"]["classified"]);

    post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    let stopped = wait_status(&client, &server, run, "stopped").await;
    let (_, history) = get(&client, &server.url("/api/pipeline/history?limit=5")).await;
    assert_eq!(history["runs"][0]["run_id"], run);
    let (code, resumed) = post(&client, &server.url("/api/pipeline/run"), json!({"days": 90, "resume": true})).await;
    assert_eq!((code, resumed["run_id"].clone()), (200, json!(run)), "{resumed}");
    wait_stored(&client, &server, run, stopped["conversations_stored"].as_i64().unwrap() + 300).await;
    post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    wait_status(&client, &server, run, "stopped").await;
    let (code, resumed) =
        post(&client, &server.url("/api/pipeline/run"), json!({"resume": true, "resume_run_id": run})).await;
    assert_eq!((code, resumed["status"].clone()), (200, json!("resumed")), "{resumed}");
    let done = wait_status(&client, &server, run, "completed").await;

    let dataset = intercom.dataset();
    let short: std::collections::BTreeSet<String> = dataset.short_ids().into_iter().collect();
    let expected: std::collections::BTreeSet<String> =
        dataset.ids_in_range(0, i64::MAX).into_iter().filter(|id| !short.contains(id)).collect();
    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), expected.len() as i64);
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), expected.len() as i64, "each conversation once");
    assert_eq!(done["conversations_stored"], expected.len());
    let calls = openai.counters();
    assert_eq!(calls.max_chat_repeats, 1, "no conversation was classified twice across stops and resumes");
    assert_eq!(calls.distinct_chat_inputs, expected.len() as u64);
}
