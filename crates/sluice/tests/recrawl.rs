//! Re-crawls with the real binary against the test kit's site: the second
//! crawl of an unchanged site asks for every stored page conditionally and
//! gets only 304s for them (counted at the site), with no stage work (no
//! call at the fake embeddings API, no document written again); an edited
//! page is fetched and embedded again; a page that is now 404 or 410 is
//! marked deleted (`on_delete = "mark"`, left out of the counts) or removed
//! (`on_delete = "remove"`, with its chunks), counted deleted once however
//! many re-crawls find it still gone; back as it was, it is stored again.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sluice_testkit::site::{FakeSite, SiteConfig};
use sluice_testkit::{FakeOpenAi, OpenAiConfig};

struct Fakes {
    site: FakeSite,
    openai: FakeOpenAi,
    _runtime: tokio::runtime::Runtime,
}

fn fakes() -> Fakes {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let site =
        runtime.block_on(FakeSite::start(SiteConfig { pages: 30, slow_ms: 50, ..SiteConfig::default() })).unwrap();
    let openai = runtime.block_on(FakeOpenAi::start(OpenAiConfig::default())).unwrap();
    Fakes { site, openai, _runtime: runtime }
}

fn pipeline(dir: &Path, site: &FakeSite, on_delete: &str) -> PathBuf {
    let path = dir.join(format!("recrawl-{on_delete}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "recrawl"
batch_size = 10

[source]
kind = "crawl"
start_urls = ["{start}"]
concurrency = 4
per_host_concurrency = 4
delay_ms = 0
retry_base_ms = 1
on_delete = "{on_delete}"

[[stages]]
kind = "extract_html"

[[stages]]
kind = "chunk"
by = "chars"
size = 400
overlap = 40

[[stages]]
kind = "embed"
provider = "openai"
model = "text-embedding-3-small"
dimensions = 16
batch_size = 32
"#,
            start = site.url("/"),
        ),
    )
    .unwrap();
    path
}

/// One `sluice run` (a new run each time); its JSON summary.
fn crawl(fakes: &Fakes, config: &Path, db: &Path) -> serde_json::Value {
    let out = run_ok(
        sluice()
            .args(["run", "-q", "--json", "-c"])
            .arg(config)
            .arg("--db")
            .arg(db)
            .env("OPENAI_BASE_URL", format!("{}/v1", fakes.openai.base_url()))
            .env("OPENAI_API_KEY", fakes.openai.key()),
    );
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    summary
}

fn scalar(db: &Path, sql: &str) -> i64 {
    count(&common::db(db), sql)
}

fn reset(fakes: &Fakes) {
    fakes.site.reset_counts();
    fakes.openai.reset_counters();
}

#[test]
fn an_unchanged_site_recrawled_costs_only_304s_and_a_removed_page_is_marked_deleted() {
    let fakes = fakes();
    let site = &fakes.site;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("recrawl.db");
    let config = pipeline(dir.path(), site, "mark");

    // The first crawl: every page answered in full.
    let first = crawl(&fakes, &config, &db);
    let stored = scalar(&db, "SELECT COUNT(*) FROM documents");
    assert_eq!(stored as usize, site.expected(None).stored().len(), "{first}");
    let full_200s = site.status_count(200);
    assert!(full_200s >= stored as u64 && site.status_count(304) == 0);
    assert!(fakes.openai.counters().embedded_inputs > 0);
    let with_validators =
        scalar(&db, "SELECT COUNT(*) FROM documents WHERE json_extract(fields, '$.etag') IS NOT NULL");
    assert_eq!(with_validators, stored, "every stored page keeps its ETag");

    // The same site again: a 304 for every stored page, the 200s only for
    // what is not stored (a meta refresh, the image, the page that drops).
    reset(&fakes);
    let again = crawl(&fakes, &config, &db);
    assert_eq!(site.status_count(304), stored as u64, "{again}");
    assert_eq!(site.status_count(200), full_200s - stored as u64, "no stored page is sent again");
    assert_eq!(fakes.openai.counters().embedding_requests, 0, "no stage work: no embedding call");
    assert_eq!(again["counts"]["unchanged"], stored, "{again}");
    assert_eq!(again["counts"]["stored"], 0, "{again}");
    assert_eq!(scalar(&db, "SELECT MAX(write_count) FROM documents"), 1, "nothing written again");
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM documents WHERE run_id = 2"), 0);

    // One page edited, one gone (410), one not found (404).
    site.edit("/docs/3");
    site.remove("/docs/5", 410);
    site.remove("/docs/7", 404);
    reset(&fakes);
    let third = crawl(&fakes, &config, &db);
    let gone_answers = site.status_count(404) + site.status_count(410);
    let url = |path: &str| site.url(path);
    let writes = |id: &str| {
        common::db(&db).query_row("SELECT write_count FROM documents WHERE id = ?1", [id], |r| r.get::<_, i64>(0))
    };
    assert_eq!(writes(&url("/docs/3")).unwrap(), 2, "the edited page is stored again");
    let text: String =
        common::db(&db).query_row("SELECT text FROM documents WHERE id = ?1", [url("/docs/3")], |r| r.get(0)).unwrap();
    assert!(text.contains("Revised, revision 1."), "{text}");
    assert!(fakes.openai.counters().embedded_inputs > 0, "the edited page's chunks are embedded");
    assert_eq!(third["counts"]["stored"], 1, "{third}");
    assert_eq!(third["counts"]["deleted"], 2, "{third}");
    // Marked, not removed: the rows stay, with tombstones, and reads leave them out.
    let marked: Vec<String> = {
        let conn = common::db(&db);
        let mut stmt = conn.prepare("SELECT id FROM deleted_documents ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(marked, [url("/docs/5"), url("/docs/7")]);
    assert_eq!(writes(&url("/docs/5")).unwrap(), 1, "a marked document keeps its row");
    let failures: Vec<String> = {
        let conn = common::db(&db);
        let mut stmt = conn.prepare("SELECT record_id FROM failures WHERE run_id = 3").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(!failures.contains(&url("/docs/5")) && !failures.contains(&url("/docs/7")), "{failures:?}");
    let status = json_stdout(&run_ok(sluice().args(["status", "3", "--json", "--db"]).arg(&db)));
    assert_eq!(status["counts"]["deleted"], 2, "{status}");

    // Re-crawled while they stay gone: they were counted deleted once, the
    // first time; now there is nothing to do for them (no count, no failure,
    // the tombstones of run 3 kept).
    reset(&fakes);
    let again = crawl(&fakes, &config, &db);
    assert_eq!(site.status_count(404) + site.status_count(410), gone_answers, "both are still asked for");
    let n = |summary: &serde_json::Value, key: &str| summary["counts"][key].as_i64().unwrap_or(0);
    assert_eq!((n(&again, "deleted"), n(&again, "stored")), (0, 0), "{again}");
    assert_eq!(n(&again, "failed"), n(&third, "failed"), "no new failure: {again}");
    let failures: Vec<String> = {
        let conn = common::db(&db);
        let mut stmt = conn.prepare("SELECT record_id FROM failures WHERE run_id = 4").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(!failures.contains(&url("/docs/5")) && !failures.contains(&url("/docs/7")), "{failures:?}");
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM deleted_documents WHERE run_id = 3"), 2);

    // /docs/7 back as it was: its content hash is the stored one, yet it is
    // stored again (not skipped as unchanged) and its tombstone lifted.
    site.restore("/docs/7");
    reset(&fakes);
    let back = crawl(&fakes, &config, &db);
    assert_eq!(n(&back, "stored"), 1, "{back}");
    assert_eq!(writes(&url("/docs/7")).unwrap(), 2);
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM deleted_documents"), 1, "only /docs/5 is still marked");
    site.remove("/docs/7", 404);

    // The same pages with on_delete = "remove": the rows and their chunks go
    // (/docs/5 marked before, /docs/7 stored).
    let remove = pipeline(dir.path(), site, "remove");
    reset(&fakes);
    let removing = crawl(&fakes, &remove, &db);
    assert_eq!(removing["counts"]["deleted"], 2, "{removing}");
    assert!(writes(&url("/docs/5")).is_err() && writes(&url("/docs/7")).is_err(), "removed");
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM deleted_documents"), 0);
    let orphans = "SELECT COUNT(*) FROM chunks c WHERE NOT EXISTS \
                   (SELECT 1 FROM documents d WHERE d.source = c.source AND d.id = c.doc_id)";
    assert_eq!(scalar(&db, orphans), 0, "their chunks went with them");
}
