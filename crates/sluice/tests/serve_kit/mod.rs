//! The real `sluice serve` binary for the HTTP tests, and a few requests to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::sluice;

pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`, for raw TCP.
    pub addr: String,
}

impl Server {
    pub fn start(config: &Path, db: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(config, db, env, &[])
    }

    /// With more arguments after `serve` (a `--bind` among them replaces the loopback default).
    pub fn start_with(config: &Path, db: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::spawn(config, db, env, args, Stdio::null())
    }

    /// Like [`Server::start_with`], its log (stderr) written to `log`.
    pub fn start_logged(config: &Path, db: &Path, env: &[(&str, &str)], args: &[&str], log: &Path) -> Server {
        Self::spawn(config, db, env, args, std::fs::File::create(log).unwrap().into())
    }

    fn spawn(config: &Path, db: &Path, env: &[(&str, &str)], args: &[&str], stderr: Stdio) -> Server {
        let mut cmd = sluice();
        cmd.arg("serve");
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(args).arg("-c").arg(config).arg("--db").arg(db);
        for key in [
            "SLUICE_API_TOKEN",
            "SLUICE_PROTECT_READS",
            "SLUICE_HEADER_TIMEOUT_SECS",
            "SLUICE_BODY_TIMEOUT_SECS",
            "SLUICE_IDLE_TIMEOUT_SECS",
            "SLUICE_MAX_CONNECTIONS",
        ] {
            cmd.env_remove(key);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let listening = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_string();
        // A wildcard bind is reached over loopback.
        let port = listening.rsplit(':').next().unwrap().to_string();
        let addr = format!("127.0.0.1:{port}");
        Server { child, base: format!("http://{addr}"), addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

pub async fn wait_status(client: &reqwest::Client, server: &Server, run: i64, want: &str) -> Value {
    let started = Instant::now();
    loop {
        let (code, doc) = get(client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
        assert_eq!(code, 200);
        if doc["status"] == want {
            return doc;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "run {run} never became {want}: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_stored(client: &reqwest::Client, server: &Server, run: i64, at_least: i64) {
    let started = Instant::now();
    loop {
        let (_, doc) = get(client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
        if doc["conversations_stored"].as_i64().unwrap_or(0) >= at_least {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts an error answer is the API's JSON error: `{"error": "...", "detail": ...}`.
pub async fn json_error(resp: reqwest::Response, what: &str) -> (u16, Value) {
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = resp.text().await.unwrap();
    assert!(content_type.starts_with("application/json"), "{what} -> {status} {content_type:?}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what} -> {status}: {e}: {text}"));
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what} -> {status}: no error in {body}");
    assert!(body.get("detail").is_some(), "{what} -> {status}: no detail in {body}");
    (status, body)
}
