//! `sluice failures retry RUN` on a crawl: the pages that failed (a 404, a
//! dropped connection) are fetched again, and the ones that now answer are
//! stored and their failures resolved.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;

/// A site whose `/later` page is missing until `healed` is set.
#[derive(Default)]
struct Site {
    healed: AtomicBool,
    later_fetches: AtomicU64,
}

fn html(body: &str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], format!("<html><body><main>{body}</main></body></html>"))
        .into_response()
}

async fn start_site(site: Arc<Site>) -> String {
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                html("<h1>Home</h1><p>The home page of a small site, long enough to be worth keeping.</p><a href=\"/ok\">ok</a> <a href=\"/later\">later</a>")
            }),
        )
        .route("/ok", get(|| async { html("<h1>Ok</h1><p>This page always answers with a decent paragraph of text.</p>") }))
        .route(
            "/later",
            get(|State(site): State<Arc<Site>>| async move {
                site.later_fetches.fetch_add(1, Ordering::SeqCst);
                if site.healed.load(Ordering::SeqCst) {
                    html("<h1>Later</h1><p>This page was missing during the first crawl and is here now.</p>")
                } else {
                    (StatusCode::NOT_FOUND, "not here yet").into_response()
                }
            }),
        )
        .route("/robots.txt", get(|| async { (StatusCode::NOT_FOUND, "") }))
        .with_state(site);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_crawl_page_is_fetched_again_and_resolved() {
    let site = Arc::new(Site::default());
    let base = start_site(site.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crawl.db");
    let config = dir.path().join("crawl.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"site\"\nbatch_size = 10\n[source]\nkind = \"crawl\"\nstart_urls = [\"{base}/\"]\ndelay_ms = 0\nretries = 0\n\
             [[stages]]\nkind = \"extract_html\"\n[store]\nkind = \"sqlite\"\npath = {:?}\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let c = config.display().to_string();
    let run = |args: &[&str]| {
        let mut cmd = sluice();
        cmd.args(args);
        cmd.output().unwrap()
    };
    let out = tokio::task::block_in_place(|| run(&["run", "-q", "-c", &c]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let conn = common::db(&db);
    let later = format!("{base}/later");
    let failed = count(&conn, &format!("SELECT COUNT(*) FROM failures WHERE run_id = 1 AND record_id = '{later}'"));
    assert_eq!(failed, 1, "the 404 is a failure");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 2);

    // Still missing: fetched again, still failing, not resolved.
    let out = tokio::task::block_in_place(|| run(&["failures", "retry", "1", "-c", &c]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("fetching 1 failed page of run 1 again"), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 failures of run 1 resolved"), "{}", stderr(&out));
    assert_eq!(site.later_fetches.load(Ordering::SeqCst), 2);

    // Back: stored and resolved; nothing else was fetched again.
    site.healed.store(true, Ordering::SeqCst);
    let out = tokio::task::block_in_place(|| run(&["failures", "retry", "1", "-c", &c, "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer = json_stdout(&out);
    assert_eq!(answer["resolved"], 1, "{answer}");
    assert_eq!(answer["summary"]["counts"]["stored"], 1, "{answer}");
    let stored = count(&conn, &format!("SELECT COUNT(*) FROM documents WHERE id = '{later}'"));
    assert_eq!(stored, 1);
    let unresolved = count(&conn, "SELECT COUNT(*) FROM failures WHERE run_id = 1 AND resolved_by IS NULL");
    assert_eq!(unresolved, 0);
    let out = tokio::task::block_in_place(|| run(&["failures", "retry", "1", "-c", &c]));
    assert!(stderr(&out).contains("nothing to retry"), "{}", stderr(&out));
}
