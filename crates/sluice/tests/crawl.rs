//! The web ingestion pipeline end to end: the real `sluice` binary crawls the
//! test kit's generated site on loopback, extracts the main text, chunks and
//! embeds it (offline), into a SQLite file; with and without a page limit,
//! in streaming and batch mode, and through a SIGKILL and a resume.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use sluice_testkit::site::{FakeSite, SiteConfig, traps};

/// The site and the runtime serving it (it lives as long as this does).
struct Served {
    site: FakeSite,
    _runtime: tokio::runtime::Runtime,
}

fn serve(pages: usize, latency_ms: u64) -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let site = runtime
        .block_on(FakeSite::start(SiteConfig { pages, latency_ms, slow_ms: 100, ..SiteConfig::default() }))
        .unwrap();
    Served { site, _runtime: runtime }
}

fn pipeline(dir: &Path, site: &FakeSite, max_pages: Option<u64>, per_host: usize) -> PathBuf {
    let path = dir.join("crawl.toml");
    let limit = max_pages.map(|n| format!("max_pages = {n}\n")).unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            r#"name = "crawl"
batch_size = 10

[source]
kind = "crawl"
start_urls = ["{start}"]
per_host_concurrency = {per_host}
concurrency = {per_host}
delay_ms = 0
retry_base_ms = 1
{limit}
[[stages]]
kind = "extract_html"

[[stages]]
kind = "chunk"
by = "chars"
size = 400
overlap = 40

[[stages]]
kind = "embed"
provider = "hashing"
dimensions = 32
"#,
            start = site.url("/"),
        ),
    )
    .unwrap();
    path
}

fn run(config: &Path, db: &Path, mode: &str) {
    run_ok(sluice().args(["run", "-q", "-c"]).arg(config).arg("--db").arg(db).env("PIPELINE_MODE", mode));
}

fn strings(db: &Path, sql: &str) -> Vec<String> {
    let conn = common::db(db);
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

/// Every chunk as (doc id, index, text, embedding bytes), in order.
fn chunks(db: &Path) -> Vec<(String, i64, String, Vec<u8>)> {
    let conn = common::db(db);
    let mut stmt = conn.prepare("SELECT doc_id, idx, text, embedding FROM chunks ORDER BY doc_id, idx").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

/// Checks the store holds exactly `stored` (once each, with chunks and
/// embeddings, without boilerplate) and lists exactly `failed` as failures.
fn assert_store(db: &Path, stored: &BTreeSet<String>, failed: &BTreeSet<String>) {
    assert_store_dims(db, stored, failed, 32);
}

fn assert_store_dims(db: &Path, stored: &BTreeSet<String>, failed: &BTreeSet<String>, dimensions: i64) {
    let ids: BTreeSet<String> = strings(db, "SELECT id FROM documents").into_iter().collect();
    assert_eq!(&ids, stored, "exactly the allowed reachable pages are stored");
    let conn = common::db(db);
    assert_eq!(count(&conn, "SELECT SUM(write_count) FROM documents"), stored.len() as i64, "each written once");
    assert_eq!(count(&conn, "SELECT COUNT(DISTINCT doc_id) FROM chunks"), stored.len() as i64, "every page has chunks");
    let wrong =
        format!("SELECT COUNT(*) FROM chunks WHERE embedding IS NULL OR length(embedding) != {}", dimensions * 4);
    assert_eq!(count(&conn, &wrong), 0, "every chunk has its embedding");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM chunks WHERE text LIKE '%tracking code%' OR text LIKE '%Copyright%'"),
        0
    );
    let failures: BTreeSet<String> =
        strings(db, "SELECT DISTINCT record_id FROM failures WHERE stage = 'source'").into_iter().collect();
    assert_eq!(&failures, failed, "the 404 and the dropped page are failures");
    let errors = strings(db, "SELECT error FROM failures");
    assert!(errors.iter().any(|e| e.contains("HTTP 404")), "{errors:?}");
}

#[test]
fn crawl_stores_exactly_the_allowed_reachable_pages_in_both_modes_identically() {
    let served = serve(300, 0);
    let site = &served.site;
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), site, None, 4);
    let expected = site.expected(None);
    assert!(expected.stored().len() > 300, "a site of a few hundred pages");

    let streaming = dir.path().join("streaming.db");
    run(&config, &streaming, "streaming");
    assert_store(&streaming, &expected.stored(), &expected.failed());
    let title: String = common::db(&streaming)
        .query_row(
            "SELECT json_extract(fields, '$.description') FROM documents WHERE id = ?1",
            [site.url("/docs/1")],
            |r| r.get(0),
        )
        .unwrap();
    assert!(title.starts_with("About Docs page 1"), "{title}");
    // Pages in other charsets are stored as the text they say, extracted from their HTML.
    let text_of = |path: &str| -> String {
        common::db(&streaming)
            .query_row("SELECT text FROM documents WHERE id = ?1", [site.url(path)], |r| r.get(0))
            .unwrap()
    };
    assert!(text_of("/charset/latin1-header.html").contains(traps::CAFE));
    assert!(text_of("/charset/cp1252-http-equiv.html").contains(traps::CAFE));
    assert!(text_of("/charset/sjis-meta.html").contains(traps::NIHONGO));
    assert!(text_of("/charset/sjis-undeclared.html").contains(traps::NIHONGO));

    let batch = dir.path().join("batch.db");
    run(&config, &batch, "batch");
    assert_store(&batch, &expected.stored(), &expected.failed());
    let (a, b) = (chunks(&streaming), chunks(&batch));
    assert!(a.len() > expected.stored().len(), "pages are cut into several chunks");
    assert_eq!(a, b, "streaming and batch store identical chunks and embeddings");
}

#[test]
fn a_page_limit_stores_the_first_pages_of_the_breadth_first_crawl() {
    let served = serve(300, 0);
    let site = &served.site;
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), site, Some(40), 4);
    let db = dir.path().join("limit.db");
    run(&config, &db, "streaming");
    let expected = site.expected(None).first(40);
    assert_store(&db, &expected.stored(), &expected.failed());
    let out = run_ok(sluice().args(["status", "1", "--json", "--db"]).arg(&db));
    let status = json_stdout(&out);
    assert_eq!(status["status"], "completed", "{status}");
}

#[test]
fn sigkill_during_the_crawl_then_resume_gives_the_same_result_without_refetching_committed_pages() {
    let served = serve(300, 25);
    let site = &served.site;
    let dir = tempfile::tempdir().unwrap();
    // Two requests at a time at 25 ms each: about 4 s of crawling.
    let config = pipeline(dir.path(), site, None, 2);
    let db = dir.path().join("crash.db");
    let store = TestDb::Sqlite(db.clone());
    let mut child = sluice()
        .args(["run", "-q", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let stored = if store.has_runs() { store.stored_in_checkpoint(1) } else { 0 };
        if stored >= 30 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the crawl ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60), "nothing committed in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..500)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let committed: BTreeSet<String> = strings(&db, "SELECT id FROM documents").into_iter().collect();
    let expected = site.expected(None);
    assert!(!committed.is_empty() && committed.len() < expected.stored().len(), "killed mid-crawl");
    assert_eq!(committed.len() as i64, store.stored_in_checkpoint(1), "the store holds what the checkpoint says");
    let path_of = |url: &str| url.strip_prefix(&site.base_url()).unwrap().to_string();
    let fetched_before: BTreeMap<String, u64> = site.fetch_counts();
    for id in &committed {
        assert_eq!(fetched_before.get(&path_of(id)), Some(&1), "{id} was fetched once before the kill");
    }

    run_ok(sluice().args(["run", "-q", "--resume-run-id", "1", "--db"]).arg(&db));
    assert_store(&db, &expected.stored(), &expected.failed());
    for id in &committed {
        assert_eq!(site.fetch_count(&path_of(id)), 1, "{id} was committed before the kill and fetched again");
    }
    let status = store.text("SELECT status FROM pipeline_runs WHERE id = 1");
    assert_eq!(status.as_deref(), Some("completed"));

    // The same final result as an uninterrupted crawl.
    let clean = dir.path().join("clean.db");
    run(&config, &clean, "streaming");
    assert_eq!(chunks(&db), chunks(&clean));
}

#[test]
fn the_example_pipeline_runs_as_written_against_the_site() {
    let served = serve(30, 0);
    let site = &served.site;
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo_root().join("examples/crawl.toml")).unwrap();
    assert!(example.contains("\"http://127.0.0.1:8003/\""));
    let config = dir.path().join("crawl.toml");
    std::fs::write(&config, example.replace("http://127.0.0.1:8003/", &site.url("/"))).unwrap();
    let db = dir.path().join("example.db");
    run(&config, &db, "streaming");
    let expected = site.expected(None);
    assert_store_dims(&db, &expected.stored(), &expected.failed(), 256);
    let out = run_ok(sluice().args(["failures", "1", "--db"]).arg(&db));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&site.url("/missing")) && listed.contains(&site.url("/flaky")), "{listed}");
}

#[test]
fn bad_crawl_settings_are_refused_at_start_with_the_key() {
    let served = serve(5, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &served.site, None, 2);
    let text = std::fs::read_to_string(&config).unwrap().replace("delay_ms = 0", "delay_ms = 99999999");
    std::fs::write(&config, text).unwrap();
    let out =
        sluice().args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(dir.path().join("x.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("crawl.delay_ms = 99999999"), "{}", stderr(&out));
    assert_eq!(served.site.total_fetches(), 0, "nothing is fetched before the settings are checked");
}
