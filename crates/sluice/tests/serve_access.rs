//! Reads behind the token, with the real binary and a real client: with
//! `--protect-reads` or a bind beyond loopback every endpoint but `/healthz`
//! needs the token; a reader without it never sees a provider's URL.

mod common;
mod serve_kit;

use common::*;
use serde_json::{Value, json};
use serve_kit::*;
use sluice_testkit::{FakeIntercom, IntercomConfig};

const SECRET: &str = "r3ad-token-value";

const READS: &[&str] = &[
    "/api/pipeline/active",
    "/api/pipeline/history",
    "/api/pipeline/status/1",
    "/api/pipeline/1",
    "/api/pipeline/1/events",
    "/metrics",
    "/openapi.json",
    "/no/such/thing",
];

async fn reads_need_the_token(server: &Server) {
    let client = reqwest::Client::new();
    for path in READS {
        for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
            let mut req = client.get(server.url(path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let (code, body) = json_error(req.send().await.unwrap(), path).await;
            assert_eq!(code, 401, "{path} with {auth:?}: {body}");
            assert!(!body.to_string().contains(SECRET));
        }
        let resp = client.get(server.url(path)).bearer_auth(SECRET).send().await.unwrap();
        assert_ne!(resp.status().as_u16(), 401, "{path} with the token");
    }
    let (code, health) = get(&client, &server.url("/healthz")).await;
    assert_eq!((code, health["status"].clone()), (200, json!("ok")), "/healthz stays open");
}

#[tokio::test]
async fn protect_reads_puts_every_get_but_healthz_behind_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server =
        Server::start_with(&config, &dir.path().join("p.db"), &[("SLUICE_API_TOKEN", SECRET)], &["--protect-reads"]);
    reads_need_the_token(&server).await;
    // The CLI companions send the token.
    let runs = json_stdout(&run_ok(sluice().env("SLUICE_API_TOKEN", SECRET).args([
        "runs",
        "--json",
        "--server",
        &server.base,
    ])));
    assert_eq!(runs, json!([]));

    // --protect-reads without a token is refused at start.
    let out = sluice()
        .env_remove("SLUICE_API_TOKEN")
        .args(["serve", "--bind", "127.0.0.1:0", "--protect-reads", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("q.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SLUICE_API_TOKEN"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_bind_beyond_loopback_protects_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server = Server::start_with(
        &config,
        &dir.path().join("w.db"),
        &[("SLUICE_API_TOKEN", SECRET)],
        &["--bind", "0.0.0.0:0"],
    );
    reads_need_the_token(&server).await;
}

/// A run that fails with an error naming provider URLs: Intercom answers 404
/// (the base URL has a wrong path), and the error lists the regions' URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_without_the_token_never_see_a_url() {
    let intercom = FakeIntercom::start(IntercomConfig::default().with_conversations(50)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ic.toml");
    std::fs::write(&config, "name = \"ic\"\nbatch_size = 50\n\n[source]\nkind = \"intercom\"\ndays = 30\n\n[[stages]]\nkind = \"normalize\"\n")
        .unwrap();
    let base = format!("{}/wrong-prefix", intercom.base_url());
    let env = [
        ("SLUICE_API_TOKEN", SECRET),
        ("INTERCOM_BASE_URL", base.as_str()),
        ("INTERCOM_ACCESS_TOKEN", intercom.token()),
    ];
    let server = Server::start(&config, &dir.path().join("u.db"), &env);
    let client = reqwest::Client::new();
    let resp = client.post(server.url("/api/pipeline/run")).bearer_auth(SECRET).json(&json!({})).send().await.unwrap();
    let started: Value = resp.json().await.unwrap();
    let run = started["run_id"].as_i64().unwrap_or_else(|| panic!("{started}"));
    let failed = wait_status(&client, &server, run, "failed").await;
    assert!(!failed.to_string().contains("://"), "no URL without the token: {failed}");
    assert!(failed["error"].as_str().unwrap().contains("<url hidden>"), "{failed}");

    let with_token: Value = client
        .get(server.url(&format!("/api/pipeline/status/{run}")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(with_token["error"].as_str().unwrap().contains("https://api.intercom.io"), "{with_token}");

    for path in [
        format!("/api/pipeline/{run}/events"),
        "/api/pipeline/history".into(),
        "/api/pipeline/active".into(),
        "/healthz".into(),
    ] {
        let open = client.get(server.url(&path)).send().await.unwrap().text().await.unwrap();
        assert!(!open.contains("://"), "{path} without the token: {open}");
    }
    let events = client
        .get(server.url(&format!("/api/pipeline/{run}/events")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("https://api.intercom.io"), "{events}");
}
