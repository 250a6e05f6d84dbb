//! `sluice serve`'s error answers with a real client against the real binary:
//! every error is `{"error", "detail"}` JSON (the framework's own rejections
//! too), the runbook's 400 for a run that does not exist, resume fields
//! applied or refused by name, and an OpenAPI document that lists them all.

mod common;
mod serve_kit;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};
use serve_kit::*;

/// Every route of the router: (method, OpenAPI path, a concrete path).
const ROUTES: &[(&str, &str, &str)] = &[
    ("post", "/api/pipeline/run", "/api/pipeline/run"),
    ("get", "/api/pipeline/status/{run_id}", "/api/pipeline/status/4242"),
    ("get", "/api/pipeline/active", "/api/pipeline/active"),
    ("get", "/api/pipeline/history", "/api/pipeline/history"),
    ("post", "/api/pipeline/stop", "/api/pipeline/stop"),
    ("get", "/api/pipeline/{run_id}/events", "/api/pipeline/4242/events"),
    ("get", "/api/pipeline/{run_id}", "/api/pipeline/4242"),
    ("get", "/metrics", "/metrics"),
    ("get", "/healthz", "/healthz"),
    ("get", "/openapi.json", "/openapi.json"),
    ("get", "/api/pipeline/{run_id}/failures", "/api/pipeline/4242/failures"),
    ("post", "/api/pipeline/{run_id}/failures/retry", "/api/pipeline/4242/failures/retry"),
    ("get", "/api/pipeline/{run_id}/results", "/api/pipeline/4242/results"),
    ("get", "/api/documents/search", "/api/documents/search"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

async fn openapi(client: &reqwest::Client, server: &Server) -> Value {
    client.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap()
}

/// The status codes the OpenAPI document lists for an operation.
fn documented(doc: &Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test]
async fn the_frameworks_own_rejections_are_json_errors_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server = Server::start(&config, &dir.path().join("e.db"), &[]);
    let client = reqwest::Client::new();
    let doc = openapi(&client, &server).await;

    // A body over the limit, with a Content-Length and chunked.
    let big = format!("{{\"days\": 3, \"pad\": \"{}\"}}", "x".repeat(100 * 1024));
    let resp = client.post(server.url("/api/pipeline/run")).body(big.clone()).send().await.unwrap();
    let (code, body) = json_error(resp, "a 100 KiB body").await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("larger than"), "{body}");
    let chunks = futures::stream::iter(
        big.into_bytes().chunks(4096).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let resp =
        client.post(server.url("/api/pipeline/run")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    let (code, body) = json_error(resp, "a 100 KiB chunked body").await;
    assert_eq!(code, 413, "{body}");

    // Wrong methods: 405 with Allow, on every route.
    let mut seen = 0;
    for (method, template, path) in ROUTES {
        for other in METHODS {
            if other.eq_ignore_ascii_case(method) || (*method == "get" && *other == "HEAD") {
                continue;
            }
            let resp = client
                .request(reqwest::Method::from_bytes(other.as_bytes()).unwrap(), server.url(path))
                .body(r#"{"dry_run": true}"#)
                .send()
                .await
                .unwrap();
            let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let (code, body) = json_error(resp, &format!("{other} {path}")).await;
            assert_eq!(code, 405, "{other} {path}: {body}");
            assert!(allow.to_lowercase().contains(method), "{other} {path}: Allow {allow:?}");
            assert!(body["error"].as_str().unwrap().contains(&allow), "{other} {path}: {body}");
            assert!(documented(&doc, method, template).contains(&"405".to_string()), "{template}");
            seen += 1;
        }
    }
    assert_eq!(seen, ROUTES.len() * (METHODS.len() - 1));

    // A path that is not UTF-8, unknown routes, bad JSON, bad queries.
    for (path, want) in [
        ("/api/pipeline/status/%FF", 400),
        ("/api/pipeline/%FF%FE", 400),
        ("/api/pipeline/%FF/events", 400),
        ("/no/such/thing", 404),
        ("/api/pipeline/status/1/extra", 404),
        ("/api/pipeline/history?limit=%FF", 400),
        ("/api/pipeline/history?limit=1&limit=2&lim=3", 400),
    ] {
        let resp = client.get(server.url(path)).send().await.unwrap();
        let (code, body) = json_error(resp, path).await;
        assert_eq!(code, want, "{path}: {body}");
    }
    for body in ["{not json", "[1, 2]", "\"days\"", "{\"days\": 1e400}", "\u{0}"] {
        let resp = client.post(server.url("/api/pipeline/run")).body(body).send().await.unwrap();
        let (code, json) = json_error(resp, body).await;
        assert_eq!(code, 400, "{body}: {json}");
    }
}

#[tokio::test]
async fn resume_of_a_run_that_does_not_exist_is_the_runbooks_400() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server = Server::start(&config, &dir.path().join("r.db"), &[]);
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/api/pipeline/run"))
        .header("content-type", "application/json")
        .body(r#"{"resume": true, "resume_run_id": 987654}"#)
        .send()
        .await
        .unwrap();
    let (code, body) = json_error(resp, "resume of run 987654").await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("987654"), "{body}");
}

#[tokio::test]
async fn resume_fields_are_applied_or_refused_by_name() {
    const RECORDS: i64 = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), RECORDS as u64, 50, 40);
    let db_path = dir.path().join("f.db");
    let server = Server::start(&config, &db_path, &[]);
    let client = reqwest::Client::new();
    let url = server.url("/api/pipeline/run");

    let (code, started) = post(&client, &url, json!({"days": 90, "max_conversations": 6000})).await;
    assert_eq!(code, 200, "{started}");
    let run = started["run_id"].as_i64().unwrap();
    wait_stored(&client, &server, run, 200).await;
    post(&client, &server.url("/api/pipeline/stop"), json!({})).await;
    let stopped = wait_status(&client, &server, run, "stopped").await;
    let fetched_at_stop = stopped["conversations_fetched"].as_i64().unwrap();
    assert!(fetched_at_stop < 6000, "{stopped}");

    // Refused, naming the field: each would otherwise be dropped.
    for (body, field) in [
        (json!({"resume": true, "resume_run_id": run, "auto_create_stories": true}), "auto_create_stories"),
        (json!({"resume": true, "resume_run_id": run, "days": 7}), "days"),
        (
            json!({"resume": true, "resume_run_id": run, "date_from": "2025-01-01", "date_to": "2025-02-01"}),
            "date_from",
        ),
        (json!({"resume": true, "date_from": "2025-01-01", "date_to": "2025-02-01"}), "date_from"),
        (json!({"resume": true, "date_to": "2025-02-01"}), "date_to"),
    ] {
        let (code, err) = post(&client, &url, body.clone()).await;
        assert_eq!(code, 400, "{body} -> {err}");
        assert!(err["error"].as_str().unwrap().contains(field), "{body}: {field} not named in {err}");
    }
    // Accepted when they say what the run already is; a dry run starts nothing.
    let same = json!({"resume": true, "resume_run_id": run, "days": 90, "auto_create_stories": false,
                      "max_conversations": 7000, "dry_run": true});
    let (code, dry) = post(&client, &url, same).await;
    assert_eq!((code, dry["status"].clone(), dry["run_id"].clone()), (200, json!("dry_run"), json!(run)), "{dry}");
    let (_, doc) = get(&client, &server.url(&format!("/api/pipeline/status/{run}"))).await;
    assert_eq!(doc["status"], "stopped", "the dry run resumed nothing: {doc}");

    // max_conversations on a resume is applied: raised from 6,000 to 7,000, counted across resumes.
    let (code, resumed) = post(&client, &url, json!({"resume": true, "days": 90, "max_conversations": 7000})).await;
    assert_eq!((code, resumed["status"].clone()), (200, json!("resumed")), "{resumed}");
    let done = wait_status(&client, &server, run, "completed").await;
    assert_eq!(done["conversations_fetched"], 7000, "{done}");
    let conn = db(&db_path);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM documents"), 7000);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM pipeline_runs"), 1);
}

#[tokio::test]
async fn the_openapi_document_lists_the_error_schema_and_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 50, 0);
    let server = Server::start(&config, &dir.path().join("o.db"), &[]);
    let client = reqwest::Client::new();
    let doc = openapi(&client, &server).await;

    let error = &doc["components"]["schemas"]["ErrorBody"];
    for field in ["error", "detail"] {
        assert!(error["properties"].get(field).is_some(), "ErrorBody lacks {field}: {error}");
    }
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.keys().any(|c| c.starts_with('2')), "{method} {path}: no success answer");
            let mut common = vec!["405", "408", "413"];
            if path != "/healthz" {
                common.push("401");
            }
            for code in common {
                assert!(responses.contains_key(code), "{method} {path} lacks {code}: {responses:?}");
            }
            for (code, response) in responses.iter().filter(|(c, _)| !c.starts_with('2')) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {code}"
                );
            }
        }
    }
    let routes: BTreeMap<&str, &str> = ROUTES.iter().map(|(m, p, _)| (*p, *m)).collect();
    assert_eq!(operations, ROUTES.len(), "one operation per route");
    for (path, method) in routes {
        assert!(doc["paths"][path].get(method).is_some(), "openapi lacks {method} {path}");
    }

    // What the routes answer to bad input is what the document says they can answer.
    let resp = client.post(server.url("/api/pipeline/run")).body("{bad").send().await.unwrap();
    assert!(documented(&doc, "post", "/api/pipeline/run").contains(&resp.status().as_u16().to_string()));
    for (method, template, path) in ROUTES.iter().filter(|(m, _, _)| *m == "get") {
        let code = client.get(server.url(path)).send().await.unwrap().status().as_u16().to_string();
        assert!(documented(&doc, method, template).contains(&code), "{path} answered {code}");
        let with_bad_id = path.replace("4242", "abc");
        let code = client.get(server.url(&with_bad_id)).send().await.unwrap().status().as_u16().to_string();
        assert!(documented(&doc, method, template).contains(&code), "{with_bad_id} answered {code}");
    }
    let code = client.post(server.url("/api/pipeline/stop")).send().await.unwrap().status().as_u16().to_string();
    assert!(documented(&doc, "post", "/api/pipeline/stop").contains(&code), "stop answered {code}");
}
