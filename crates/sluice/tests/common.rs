//! Helpers for tests that run the real `sluice` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Tests set the store explicitly; a developer's environment must not leak in.
    for key in [
        "DATABASE_URL",
        "PIPELINE_MODE",
        "PIPELINE_STREAMING_BATCH",
        "PIPELINE_STREAMING_BATCH_SIZE",
        "EMBEDDING_BATCH_SIZE",
        "SLUICE_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    cmd.current_dir(repo_root());
    cmd
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

pub fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Reads an events log, skipping a torn last line.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

pub fn count_type(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

/// A pipeline over `generate` with a little latency per page, so a run takes a while.
pub fn generate_pipeline(dir: &Path, count: u64, page_size: u64, latency_ms: u64) -> PathBuf {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "gen"
batch_size = 50

[source]
kind = "generate"
count = {count}
page_size = {page_size}
latency_ms = {latency_ms}
seed = 7

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
rules = [{{ category = "billing", keywords = ["refund", "invoice"] }}, {{ category = "bug", keywords = ["crash", "error"] }}]

[[stages]]
kind = "embed"
dimensions = 32
"#
        ),
    )
    .unwrap();
    path
}
