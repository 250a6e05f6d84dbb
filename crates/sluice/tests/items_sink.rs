//! The `items` sink through the real binary: one file of each kind per
//! stored document, matching the store; a re-run rewrites the same bytes; no
//! temporary files; a sink that cannot be written fails the run and leaves
//! the store as it was.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{count, db, repo_root, run_ok, sluice, stderr};
use sluice_connectors::store::items_sink::item_name;

const KINDS: [(&str, &str); 3] = [("raw", ".json"), ("processed", "_processed.json"), ("chunks", "_chunks.json")];

fn pipeline(dir: &Path, sink: &str) -> std::path::PathBuf {
    let data = repo_root().join("examples/data/support-tickets.jsonl");
    let path = dir.join("items.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "items"
batch_size = 50

[source]
kind = "jsonl"
path = {data:?}
name = "tickets"

[[stages]]
kind = "normalize"

[[stages]]
kind = "filter"
min_chars = 20

[[stages]]
kind = "classify"
rules = [{{ category = "billing", keywords = ["refund", "invoice"] }}]

[[stages]]
kind = "chunk"
by = "chars"
size = 200
overlap = 20

[[stages]]
kind = "embed"
dimensions = 32

[store]
kind = "sqlite"
path = {db:?}

[sink]
kind = "items"
{sink}
"#,
            db = dir.join("sluice.db"),
        ),
    )
    .unwrap();
    path
}

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn read_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("every item file is JSON")
}

#[test]
fn writes_one_file_of_each_kind_per_stored_document_and_a_rerun_rewrites_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = pipeline(dir.path(), &format!("path = {out:?}"));
    run_ok(sluice().args(["run", "-c"]).arg(&config));

    let conn = db(&dir.path().join("sluice.db"));
    let stored: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT source, id, category FROM documents ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 376, "the sample keeps 376 of its 400 tickets");

    let files = tree(&out);
    assert_eq!(files.len(), 3 * stored.len(), "exactly one file of each kind per stored document");
    assert!(files.keys().all(|name| !name.contains('#')), "no temporary files left");
    for (source, id, category) in &stored {
        let name = item_name(source, id);
        let [raw, processed, chunks] = KINDS.map(|(kind, suffix)| read_json(&files[&format!("{kind}/{name}{suffix}")]));
        assert_eq!((raw["source"].as_str(), raw["id"].as_str()), (Some(source.as_str()), Some(id.as_str())));
        assert_eq!(processed["classification"]["category"].as_str(), category.as_deref());

        let db_chunks: Vec<String> = conn
            .prepare("SELECT text FROM chunks WHERE source = ?1 AND doc_id = ?2 ORDER BY idx")
            .unwrap()
            .query_map([source, id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let chunks = chunks["chunks"].as_array().expect("a chunks array");
        assert_eq!(chunks.len(), db_chunks.len(), "{id}: the chunks the store has");
        for (chunk, text) in chunks.iter().zip(&db_chunks) {
            assert_eq!(chunk["text"].as_str(), Some(text.as_str()));
            let embedding = chunk["embedding"].as_array().expect("every chunk has its embedding");
            assert_eq!(embedding.len(), 32);
            assert!(embedding.iter().all(|x| x.is_f64()));
        }
    }

    // A second run over the same data: the same files, byte for byte, no more.
    run_ok(sluice().args(["run", "-c"]).arg(&config));
    assert_eq!(count(&conn, "SELECT MIN(write_count) FROM documents"), 2, "the re-run did upsert every document");
    assert_eq!(tree(&out), files, "a re-run rewrites the same files with the same content");
}

#[test]
fn a_sink_that_cannot_be_written_fails_the_run_and_the_store_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = pipeline(dir.path(), &format!("path = {out:?}"));
    run_ok(sluice().args(["run", "-c"]).arg(&config));
    let conn = db(&dir.path().join("sluice.db"));
    let before = count(&conn, "SELECT SUM(write_count) FROM documents");

    // raw/ is now a file: no item can be written under it.
    std::fs::remove_dir_all(out.join("raw")).unwrap();
    std::fs::write(out.join("raw"), "in the way").unwrap();
    let failed = sluice().args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "the run fails: {}", stderr(&failed));
    let error = stderr(&failed);
    assert!(error.contains("items sink") && error.contains("cannot write raw/item_"), "{error}");
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), before, "no batch was committed");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM pipeline_runs WHERE status = 'failed'"), 1);

    // Put right, the next run writes every file again.
    std::fs::remove_file(out.join("raw")).unwrap();
    run_ok(sluice().args(["run", "-c"]).arg(&config));
    assert_eq!(tree(&out).len(), 3 * 376);
}

#[test]
fn sink_settings_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let config = pipeline(dir.path(), &format!("path = {:?}", blocker.join("out")));
    let out = sluice().args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sink.path"), "{}", stderr(&out));

    if !cfg!(feature = "s3") {
        let config = pipeline(dir.path(), "url = \"s3://bucket/prefix\"");
        let out = sluice().args(["run", "-c"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--features s3"), "{}", stderr(&out));
    }
    let config = pipeline(dir.path(), "paht = \"x\"");
    let out = sluice().args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("paht"), "{}", stderr(&out));
}
