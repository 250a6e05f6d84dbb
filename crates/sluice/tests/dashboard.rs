//! The dashboard of `sluice serve` in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by `.ci/chromium.sh`)
//! driven over WebDriver against the real binary and the test kit's fake
//! OpenAI. The buttons are clicked, not bypassed: start, stop and resume a
//! run, watch its live chart advance, retry an injected failure, open a
//! theme's conversations. Nothing in the browser's console may be an error
//! and no answer may be a 5xx, to the browser or anyone else.
//!
//! With `SLUICE_DASHBOARD_SCREENSHOTS=1` the test also writes the
//! screenshots of `docs/dashboard-*.png`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

const TOKEN: &str = "dash-token-1";
const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// The WebDriver binary: `SLUICE_CHROMEDRIVER`, else `chromedriver` on the PATH;
/// `None` (skipped, or failed under CI) without one.
fn chromedriver() -> Option<PathBuf> {
    let found = std::env::var_os("SLUICE_CHROMEDRIVER").map(PathBuf::from).filter(|p| p.is_file()).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("chromedriver"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None => sluice_testkit::setting::setting_or_skip(
            "SLUICE_CHROMEDRIVER",
            "`eval \"$(.ci/chromium.sh)\"` installs chromium and chromium-driver from Debian",
        )
        .map(PathBuf::from),
    }
}

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `chromedriver` on a free port, once it answers.
async fn start_driver(binary: &Path) -> (Reaped, String) {
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not answer on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Reaped(child), url)
}

async fn open_browser(driver: &str) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", format!("--window-size={},{}", DESKTOP.0, DESKTOP.1)],
    });
    if let Some(binary) = std::env::var_os("SLUICE_CHROMIUM") {
        options["binary"] = json!(binary.to_string_lossy());
    }
    let capabilities = json!({
        "goog:chromeOptions": options,
        // The console (errors fail the test) and the network (5xx fail it).
        "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
    });
    let Value::Object(capabilities) = capabilities else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(driver).await.expect("a WebDriver session")
}

/// `sluice serve` with its log kept, to look for server errors at the end.
fn start_server(config: &Path, db: &Path, log: &Path, openai: &FakeOpenAi) -> (Reaped, String) {
    let mut cmd = sluice();
    cmd.args(["serve", "--bind", "127.0.0.1:0", "-c"])
        .arg(config)
        .arg("--db")
        .arg(db)
        .env("SLUICE_API_TOKEN", TOKEN)
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    (Reaped(child), base)
}

/// A pipeline that takes a while (paged source with latency, one LLM call per
/// record) and goes through every phase, stories included.
fn pipeline(dir: &Path) -> PathBuf {
    let path = dir.join("dash.toml");
    std::fs::write(
        &path,
        "name = \"dash\"\nbatch_size = 50\n\n[source]\nkind = \"generate\"\ncount = 6000\npage_size = 50\n\
         latency_ms = 100\nseed = 11\n\n[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"classify\"\n\
         provider = \"llm\"\nmodel = \"test-model\"\nmax_attempts = 4\nparse_attempts = 1\n\
         categories = [\"billing\", \"bug\", \"other\"]\n\n[[stages]]\nkind = \"embed\"\ndimensions = 32\n",
    )
    .unwrap();
    append(&path, ALL_PHASES);
    path
}

/// Evaluates JavaScript in the page (reads only: the actions are real clicks).
async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` until it returns something truthy; returns that.
async fn until(browser: &Client, what: &str, secs: u64, script: &str) -> Value {
    let started = Instant::now();
    loop {
        let value = browser.execute(script, vec![]).await.unwrap_or(Value::Null);
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}: not after {secs}s ({script} = {value})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` names. The runs list re-renders itself every two
/// seconds, so an element found may be replaced before the click lands: then
/// it is found again.
async fn click(browser: &Client, css: &str) {
    let mut tries = 0;
    loop {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
}

/// The message line once it says `text` (a message from an earlier action may stand until then).
async fn flash_with(browser: &Client, text: &str, secs: u64) -> String {
    let script = format!(
        "const t = document.querySelector('#flash')?.textContent || ''; return t.includes({}) ? t : ''",
        json!(text)
    );
    until(browser, &format!("the message {text:?}"), secs, &script).await.as_str().unwrap().to_string()
}

async fn wait_row(browser: &Client, run: i64, want: &str, secs: u64) {
    let script = format!("return document.querySelector('#run-{run}')?.dataset.status === '{want}'");
    until(browser, &format!("run {run} shown {want}"), secs, &script).await;
}

/// Writes `docs/dashboard-NAME.png` when screenshots are asked for.
async fn screenshot(browser: &Client, name: &str) {
    if std::env::var_os("SLUICE_DASHBOARD_SCREENSHOTS").is_none() {
        return;
    }
    let png = browser.screenshot().await.unwrap();
    std::fs::write(repo_root().join("docs").join(format!("dashboard-{name}.png")), png).unwrap();
}

/// The page fits the viewport's width (wide tables scroll inside their box).
async fn fits_width(browser: &Client, page: &str) {
    let overflow = js(browser, "return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(overflow.as_f64().unwrap() <= 1.0, "{page} is wider than the viewport by {overflow}px");
}

/// Chromedriver's legacy log endpoint (fantoccini has no call for it).
async fn browser_log(driver: &str, browser: &Client, kind: &str) -> Vec<Value> {
    let session = browser.session_id().await.unwrap().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{driver}/session/{session}/se/log"))
        .json(&json!({ "type": kind }))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["value"].as_array().cloned().unwrap_or_else(|| panic!("no {kind} log: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_drives_runs_failures_and_results_in_a_real_browser() {
    let Some(driver_bin) = chromedriver() else { return };
    // One chat answer in 97 is prose: that record fails classify (parse_attempts = 1).
    // One call in 400 is a 429 with retry-after: a rate-limit wait, retried, marked on the chart.
    let faults = OpenAiFaults {
        malformed_every: Some(97),
        rate_limit_every: Some(400),
        retry_after_secs: 1,
        ..OpenAiFaults::default()
    };
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let log = dir.path().join("serve.log");
    let (_server, base) = start_server(&config, &dir.path().join("dash.db"), &log, &openai);
    let (_driver, driver) = start_driver(&driver_bin).await;
    let browser = open_browser(&driver).await;
    browser.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
    let url = |path: &str| format!("{base}{path}");

    // Runs: empty, then the token, then a start with the runbook's options.
    browser.goto(&url("/")).await.unwrap();
    until(&browser, "the empty runs list", 10, "return document.querySelector('#runs .empty')?.textContent").await;
    click(&browser, "details.token summary").await;
    browser.find(Locator::Css("#token")).await.unwrap().send_keys(TOKEN).await.unwrap();
    click(&browser, "h1").await; // leaving the field stores the token
    let days = browser.find(Locator::Css("#days")).await.unwrap();
    days.clear().await.unwrap();
    days.send_keys("30").await.unwrap();
    browser.find(Locator::Css("#auto_create_stories")).await.unwrap().select_by_value("true").await.unwrap();
    click(&browser, "#start").await;
    flash_with(&browser, "run 1 started for", 20).await;
    wait_row(&browser, 1, "running", 20).await;
    let highlighted = js(&browser, "return document.querySelector('#run-1').classList.contains('active')").await;
    assert_eq!(highlighted, json!(true), "the active run is highlighted");
    assert_eq!(js(&browser, "return document.querySelector('#start').disabled").await, json!(true));
    screenshot(&browser, "runs").await;

    // A run: the live chart advances while the run goes on.
    click(&browser, "#run-1 td a").await;
    const POINTS: &str = "Number(document.querySelector('#chart')?.dataset.points || 0)";
    let first = until(&browser, "points on the chart", 30, &format!("return {POINTS} >= 3 && {POINTS}")).await;
    let first = first.as_f64().unwrap();
    let later = until(&browser, "the chart advancing", 30, &format!("return {POINTS} > {first} && {POINTS}")).await;
    assert!(later.as_f64().unwrap() > first);
    let polyline = js(&browser, "return document.querySelector('#chart polyline').getAttribute('points')").await;
    assert!(polyline.as_str().unwrap().split(' ').count() as f64 >= first, "{polyline}");
    until(
        &browser,
        "the cost ledger counting LLM calls",
        30,
        "return Number(document.querySelector('#cost-llm').textContent) > 0",
    )
    .await;
    until(
        &browser,
        "a partition in the checkpoint",
        30,
        "return document.querySelectorAll('#partitions tbody tr').length",
    )
    .await;
    screenshot(&browser, "run").await;

    // Stop and resume from the buttons of the runs list.
    browser.goto(&url("/")).await.unwrap();
    wait_row(&browser, 1, "running", 20).await;
    click(&browser, "#run-1 button.stop").await;
    flash_with(&browser, "run 1 will stop", 20).await;
    wait_row(&browser, 1, "stopped", 60).await;
    let stopped_at = js(&browser, "return Number(document.querySelector('#run-1 td:nth-child(6)').textContent)").await;
    let stopped_at = stopped_at.as_f64().unwrap();
    assert!(stopped_at > 0.0 && stopped_at < 6000.0, "stopped mid-run: {stopped_at} stored");
    click(&browser, "#run-1 button.resume").await;
    flash_with(&browser, "run 1 resumed", 20).await;
    wait_row(&browser, 1, "completed", 240).await;

    // Marks on the chart: the rate-limit waits and the phases (replayed from the run's history).
    browser.goto(&url("/runs/1")).await.unwrap();
    until(&browser, "marks on the chart", 30, "return document.querySelectorAll('#chart line.rate_limited').length")
        .await;
    until(&browser, "phase marks", 30, "return document.querySelectorAll('#chart line.phase').length >= 4").await;
    let phases = js(
        &browser,
        "return [...document.querySelectorAll('#phases tbody tr td:first-child')].map(td => td.textContent)",
    )
    .await;
    assert!(phases.as_array().unwrap().len() >= 4, "{phases}");

    // Failures: the injected ones are listed, filterable, and the retry resolves them.
    browser.goto(&url("/runs/1/failures")).await.unwrap();
    let rows = js(&browser, "return document.querySelectorAll('#failures tbody tr').length").await;
    let rows = rows.as_u64().unwrap();
    assert!(rows > 0, "no failures listed");
    let types = js(
        &browser,
        "return [...document.querySelectorAll('#failures tbody tr td:nth-child(4)')].map(td => td.textContent)",
    )
    .await;
    assert!(types.as_array().unwrap().iter().all(|t| t == "parse"), "{types}");
    browser.find(Locator::Css("select[name=error_type]")).await.unwrap().select_by_value("parse").await.unwrap();
    browser.find(Locator::Css("input[name=q]")).await.unwrap().send_keys("no-such-text").await.unwrap();
    click(&browser, "form.filter button").await;
    until(&browser, "the filter applied", 10, "return location.search.includes('q=no-such-text')").await;
    assert_eq!(js(&browser, "return document.querySelectorAll('#failures tbody tr').length").await, json!(0));
    browser.goto(&url("/runs/1/failures?error_type=parse")).await.unwrap();
    assert_eq!(js(&browser, "return document.querySelectorAll('#failures tbody tr').length").await, json!(rows));
    screenshot(&browser, "failures").await;
    openai.set_faults(OpenAiFaults::default());
    click(&browser, "#retry").await;
    flash_with(&browser, &format!(": {rows} failures of run 1 resolved"), 60).await;
    let resolved = js(&browser, "return [...document.querySelectorAll('#failures td.resolved-by')].every(td => td.textContent.startsWith('by run'))")
        .await;
    assert_eq!(resolved, json!(true));
    assert_eq!(js(&browser, "return document.querySelector('#retry')").await, Value::Null, "nothing left to retry");

    // Results: a theme's conversations open, with title, classification and facets.
    browser.goto(&url("/runs/1/results")).await.unwrap();
    let themes = js(&browser, "return document.querySelectorAll('#themes tbody tr').length").await;
    assert_eq!(themes, json!(6), "the pipeline asks for 6 themes");
    assert!(js(&browser, "return document.querySelectorAll('ul.stories li').length").await.as_u64().unwrap() > 0);
    click(&browser, "#themes tbody tr:first-child a.open").await;
    let opened = until(
        &browser,
        "the theme's conversations",
        20,
        "return document.querySelectorAll('#conversations tbody tr').length",
    )
    .await;
    let size =
        js(&browser, "return Number(document.querySelector('#themes tr.active td:nth-child(2)').textContent)").await;
    assert_eq!(opened, size, "every conversation of the theme is shown");
    let first_row = js(
        &browser,
        "return [...document.querySelectorAll('#conversations tbody tr:first-child td')].map(td => td.textContent)",
    )
    .await;
    let cells = first_row.as_array().unwrap();
    assert!(["billing", "bug", "other"].contains(&cells[1].as_str().unwrap()), "classification: {first_row}");
    assert!(cells[2].as_str().unwrap().contains(':'), "facets: {first_row}");
    screenshot(&browser, "results").await;

    // Search over stored documents by text.
    browser.goto(&url("/search")).await.unwrap();
    browser.find(Locator::Css("#q")).await.unwrap().send_keys("refund").await.unwrap();
    click(&browser, "form.filter button").await;
    let found =
        until(&browser, "search results", 20, "return document.querySelectorAll('table.documents tbody tr').length")
            .await;
    assert!(found.as_u64().unwrap() > 0);
    let all_match = js(&browser, "return [...document.querySelectorAll('table.documents tbody tr')].every(tr => tr.textContent.toLowerCase().includes('refund'))")
        .await;
    assert_eq!(all_match, json!(true));
    screenshot(&browser, "search").await;

    // Both viewports: nothing wider than the screen.
    for path in ["/", "/runs/1", "/runs/1/failures", "/runs/1/results?key=theme-000", "/search?q=refund"] {
        browser.goto(&url(path)).await.unwrap();
        fits_width(&browser, path).await;
    }
    browser.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    for path in ["/", "/runs/1", "/runs/1/failures", "/runs/1/results?key=theme-000", "/search?q=refund"] {
        browser.goto(&url(path)).await.unwrap();
        fits_width(&browser, path).await;
        if path == "/runs/1" {
            screenshot(&browser, "phone").await;
        }
    }

    // No console errors, no 5xx, in the browser or in the server's log.
    let console = browser_log(&driver, &browser, "browser").await;
    let errors: Vec<&Value> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let network = browser_log(&driver, &browser, "performance").await;
    let mut responses = 0;
    for entry in &network {
        let message: Value = serde_json::from_str(entry["message"].as_str().unwrap_or("{}")).unwrap_or_default();
        if message["message"]["method"] == "Network.responseReceived" {
            responses += 1;
            let response = &message["message"]["params"]["response"];
            let status = response["status"].as_f64().unwrap_or(0.0);
            assert!(status < 500.0, "{} answered {status}", response["url"]);
        }
    }
    assert!(responses > 20, "the network log saw {responses} responses");
    browser.close().await.unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("request failed") && !log.contains("page failed"), "server errors:\n{log}");
}

/// The read-only pages are whole without JavaScript: what a plain GET answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_pages_are_rendered_by_the_server() {
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        "name = \"small\"\nbatch_size = 20\n[source]\nkind = \"generate\"\ncount = 120\npage_size = 20\nseed = 3\n\
         [[stages]]\nkind = \"normalize\"\n[[stages]]\nkind = \"embed\"\ndimensions = 16\n",
    )
    .unwrap();
    append(&config, ALL_PHASES);
    let db = dir.path().join("small.db");
    run_ok(sluice().args(["run", "-q", "-c"]).arg(&config).arg("--db").arg(&db));
    let log = dir.path().join("serve.log");
    let (_server, base) = start_server(&config, &db, &log, &openai);
    let client = reqwest::Client::new();
    let page = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{url}");
            let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
            assert!(kind.starts_with("text/html"), "{url}: {kind}");
            resp.text().await.unwrap()
        }
    };
    let runs = page("/").await;
    assert!(runs.contains("id=\"run-1\"") && runs.contains("completed"), "{runs}");
    let run = page("/runs/1").await;
    assert!(run.contains("id=\"phases\"") && run.contains("theme_extraction"), "{run}");
    let results = page("/runs/1/results?key=theme-000").await;
    assert!(results.contains("id=\"conversations\""), "{results}");
    assert!(results.matches("<tr").count() > 6, "themes and conversations listed");
    let search = page("/search?q=the").await;
    assert!(search.contains("id=\"search-count\""), "{search}");
    let failures = page("/runs/1/failures").await;
    assert!(failures.contains("No failures to show."), "{failures}");

    // The JSON behind them.
    let results: Value =
        client.get(format!("{base}/api/pipeline/1/results?key=theme-000")).send().await.unwrap().json().await.unwrap();
    assert_eq!(results["themes"].as_array().unwrap().len(), 6, "{results}");
    let opened = results["themes"].as_array().unwrap().iter().find(|t| t["key"] == "theme-000").unwrap();
    assert_eq!(opened["conversations"].as_array().unwrap().len() as u64, opened["value"]["size"].as_u64().unwrap());
    let found: Value =
        client.get(format!("{base}/api/documents/search?q=the&limit=5")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found["documents"].as_array().unwrap().len(), 5, "{found}");
    let failures: Value =
        client.get(format!("{base}/api/pipeline/1/failures")).send().await.unwrap().json().await.unwrap();
    assert_eq!(failures["total"], 0, "{failures}");

    let doc: Value = client.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in [
        "/api/pipeline/{run_id}/failures",
        "/api/pipeline/{run_id}/failures/retry",
        "/api/pipeline/{run_id}/results",
        "/api/documents/search",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["paths"]["/api/pipeline/{run_id}/failures/retry"]["post"]["responses"].get("401").is_some());

    // Bad input gets a clear 4xx, never a 5xx.
    for (path, want) in [
        ("/runs/0", 400),
        ("/runs/99", 404),
        ("/runs/1/results?key=nope", 404),
        ("/runs/1/failures?unresolved=maybe", 400),
        ("/api/documents/search", 400),
        ("/api/documents/search?q=x&limit=0", 400),
        ("/api/pipeline/1/failures?color=red", 400),
    ] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
    }
    // The retry is a mutation: it needs the token.
    let resp = client.post(format!("{base}/api/pipeline/1/failures/retry")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client.post(format!("{base}/api/pipeline/1/failures/retry")).bearer_auth(TOKEN).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "nothing_to_retry", "{body}");
}
