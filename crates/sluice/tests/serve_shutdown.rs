//! SIGTERM to the real `sluice serve` with a run going and a client on its
//! event stream: the run stops at a batch boundary, the stream ends with its
//! RunFinished, and the server exits 0.

mod common;
mod serve_kit;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use serve_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_run_ends_its_stream_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 8_000, 50, 20);
    let db_path = dir.path().join("sd.db");
    let mut server = Server::start(&config, &db_path, &[]);
    let client = reqwest::Client::new();
    let (_, started) = post(&client, &server.url("/api/pipeline/run"), json!({})).await;
    let run = started["run_id"].as_i64().unwrap();
    wait_stored(&client, &server, run, 100).await;
    let stream = tokio::spawn(client.get(server.url(&format!("/api/pipeline/{run}/events"))).send());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = std::process::Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let asked = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(asked.elapsed() < Duration::from_secs(60), "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));

    let body = stream.await.unwrap().unwrap().text().await.unwrap();
    let last: Value =
        serde_json::from_str(body.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap()).unwrap();
    assert_eq!((last["type"].clone(), last["status"].clone()), (json!("RunFinished"), json!("stopped")), "{last}");
    let conn = db(&db_path);
    let status: String = conn.query_row("SELECT status FROM pipeline_runs", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "stopped");
}
