//! The fake Intercom over real HTTP on loopback, with reqwest.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_testkit::intercom::{DatasetSpec, IntercomTarget};
use sluice_testkit::{Clock, DropMode, FakeIntercom, FaultKind, IntercomConfig, IntercomFaults, Theme};

const NOW: i64 = 1_767_225_600;

async fn fake(config: IntercomConfig) -> FakeIntercom {
    FakeIntercom::start(config).await.expect("fake intercom starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn range_query(from: i64, to: i64) -> Value {
    json!({
        "operator": "AND",
        "value": [
            {"field": "updated_at", "operator": ">=", "value": from},
            {"field": "updated_at", "operator": "<", "value": to.to_string()},
        ]
    })
}

async fn search_raw(fake: &FakeIntercom, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/conversations/search", fake.base_url()))
        .bearer_auth(fake.token())
        .header("Accept", "application/json")
        .header("Intercom-Version", "2.11")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn search(fake: &FakeIntercom, body: &Value) -> (StatusCode, Value) {
    let resp = search_raw(fake, body).await;
    let status = resp.status();
    (status, resp.json().await.expect("json body"))
}

async fn get_conv(fake: &FakeIntercom, id: &str) -> reqwest::Response {
    client()
        .get(format!("{}/conversations/{id}", fake.base_url()))
        .bearer_auth(fake.token())
        .header("Accept", "application/json")
        .send()
        .await
        .expect("request sent")
}

fn ids_of(page: &Value) -> Vec<String> {
    page["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

/// Follows `next` from the first page; returns the ids and the pages.
async fn paginate(fake: &FakeIntercom, query: Value, per_page: u64, order: &str) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut pagination = json!({"per_page": per_page});
        if let Some(c) = &cursor {
            pagination["starting_after"] = json!(c);
        }
        let body = json!({"query": query, "sort": {"field": "updated_at", "order": order}, "pagination": pagination});
        let (status, page) = search(fake, &body).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        ids.extend(ids_of(&page));
        cursor = page["pages"].get("next").map(|n| n["starting_after"].as_str().unwrap().to_string());
        pages.push(page);
        if cursor.is_none() {
            return (ids, pages);
        }
        assert!(pages.len() < 1000, "runaway pagination");
    }
}

#[tokio::test]
async fn pagination_reaches_every_conversation_in_range_exactly_once() {
    let fake = fake(IntercomConfig::default().with_conversations(1000)).await;
    let ds = fake.dataset();
    let (from, to) = (NOW - 60 * 86_400, NOW - 10 * 86_400);
    let expected = ds.ids_in_range(from, to);
    assert!(expected.len() > 400, "{}", expected.len());

    let (ids, pages) = paginate(&fake, range_query(from, to), 37, "ascending").await;
    assert_eq!(ids, expected, "ascending by (updated_at, id), each once");
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());

    let total = expected.len() as u64;
    let total_pages = total.div_ceil(37);
    assert_eq!(pages.len() as u64, total_pages);
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page["type"], "conversation.list");
        assert_eq!(page["total_count"], total);
        let p = &page["pages"];
        assert_eq!(p["type"], "pages");
        assert_eq!(p["page"], i as u64 + 1);
        assert_eq!(p["per_page"], 37);
        assert_eq!(p["total_pages"], total_pages);
        if i + 1 < pages.len() {
            assert_eq!(p["next"]["page"], i as u64 + 2);
            assert!(p["next"]["starting_after"].as_str().unwrap().starts_with("Wz"));
        } else {
            assert!(p.get("next").is_none(), "last page has no next key: {p}");
        }
        for c in page["conversations"].as_array().unwrap() {
            assert!(c.get("conversation_parts").is_none(), "search items have no parts");
            let t = c["updated_at"].as_i64().unwrap();
            assert!(t >= from && t < to);
        }
    }
    let counters = fake.counters();
    assert_eq!(counters.pages_served, total_pages);
    assert_eq!(counters.conversations_listed, total);
    assert_eq!(counters.search_requests, total_pages);
    assert_eq!(counters.intercom_versions.get("2.11"), Some(&total_pages));
    let log = fake.request_log();
    assert_eq!(log.len() as u64, total_pages);
    assert_eq!(log[1].starting_after, log[0].next);
}

#[tokio::test]
async fn descending_sort_other_queries_and_ties() {
    let fake = fake(IntercomConfig::default().with_conversations(600)).await;
    let ds = fake.dataset();
    // Ties on updated_at exist and are broken by id.
    assert!(ds.all().windows(2).any(|w| w[0].updated_at == w[1].updated_at));

    let (from, to) = (NOW - 30 * 86_400, NOW);
    let q = json!({"field": "updated_at", "operator": ">", "value": from});
    let (ids, _) = paginate(&fake, q.clone(), 150, "descending").await;
    let mut expected = ds.ids_matching(&q).unwrap();
    expected.reverse();
    assert_eq!(ids, expected);
    assert!(ds.get(ids.last().unwrap()).unwrap().updated_at > from);
    assert!(ds.all().iter().filter(|c| c.updated_at > from && c.updated_at <= to).count() == ids.len());

    let q = json!({"operator": "OR", "value": [
        {"field": "updated_at", "operator": "<=", "value": NOW - 80 * 86_400},
        {"operator": "AND", "value": [
            {"field": "updated_at", "operator": ">=", "value": NOW - 5 * 86_400},
            {"field": "state", "operator": "=", "value": "open"}
        ]}
    ]});
    let (ids, _) = paginate(&fake, q.clone(), 50, "ascending").await;
    assert_eq!(ids, ds.ids_matching(&q).unwrap());
    assert!(!ids.is_empty());

    let q = json!({"field": "updated_at", "operator": "=", "value": ds.all()[3].updated_at});
    let (ids, _) = paginate(&fake, q, 10, "ascending").await;
    assert!(ids.contains(&ds.all()[3].id));

    // An empty result: one page, no next.
    let q = json!({"field": "updated_at", "operator": ">", "value": NOW + 1});
    let (status, page) = search(&fake, &json!({"query": q})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total_count"], 0);
    assert!(page["pages"].get("next").is_none());
}

#[tokio::test]
async fn conversation_get_and_not_found() {
    let fake = fake(IntercomConfig::default().with_conversations(50)).await;
    let ds = fake.dataset();
    let c = ds.all().iter().find(|c| !c.parts.is_empty()).unwrap();
    let resp = get_conv(&fake, &c.id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-ratelimit-remaining"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "conversation");
    assert_eq!(v["id"], c.id.as_str());
    assert_eq!(v["source"]["body"], c.body.as_str());
    assert_eq!(v["conversation_parts"]["type"], "conversation_part.list");
    assert_eq!(v["conversation_parts"]["total_count"], c.parts.len());
    assert_eq!(v["conversation_parts"]["conversation_parts"].as_array().unwrap().len(), c.parts.len());

    let resp = client()
        .get(format!("{}/conversations/{}?display_as=plaintext", fake.base_url(), c.id))
        .bearer_auth(fake.token())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(!v["source"]["body"].as_str().unwrap().contains("<p>"));

    let resp = get_conv(&fake, "123").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error.list");
    assert_eq!(v["errors"][0]["code"], "not_found");
    assert_eq!(v["errors"][0]["message"], "Resource Not Found");
    assert!(v["request_id"].is_string());

    // Unknown route and wrong method are 404 too, like Intercom.
    let resp = client().get(format!("{}/nope", fake.base_url())).bearer_auth(fake.token()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = client()
        .delete(format!("{}/conversations/search", fake.base_url()))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let counters = fake.counters();
    assert_eq!(counters.conversations_fetched, 2);
    assert_eq!(counters.get_requests, 3);
    assert_eq!(counters.not_found, 3);
}

#[tokio::test]
async fn auth_accept_and_bad_request_bodies() {
    let fake = fake(IntercomConfig::default().with_conversations(20)).await;
    let url = format!("{}/conversations/search", fake.base_url());
    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}});

    for auth in [None, Some("Bearer wrong"), Some("Basic dGVzdA==")] {
        let mut req = client().post(&url).header("Accept", "application/json").json(&body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(!resp.headers().contains_key("x-ratelimit-limit"), "no rate-limit headers without valid credentials");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error.list");
        assert_eq!(v["errors"], json!([{"code": "unauthorized", "message": "Access Token Invalid"}]));
    }

    for accept in [Some("text/html"), None] {
        let mut req = client().post(&url).bearer_auth(fake.token()).json(&body);
        req = match accept {
            Some(a) => req.header("Accept", a),
            // reqwest sends `Accept: */*` by default; an empty value is as good as none.
            None => req.header("Accept", ""),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error.list");
        assert_eq!(v["errors"][0]["code"], "media_type_not_acceptable");
    }
    // `*/*` (reqwest's default) is fine.
    let resp = client().post(&url).bearer_auth(fake.token()).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let bad_cursor =
        json!({"query": body["query"], "pagination": {"per_page": 5, "starting_after": "bm90IGEgY3Vyc29y"}});
    let (status, v) = search(&fake, &bad_cursor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["type"], "error.list");
    assert_eq!(v["errors"][0]["code"], "client_error");
    assert!(v["errors"][0]["message"].as_str().unwrap().starts_with("Invalid starting_after param"));

    let (status, v) = search(&fake, &json!({"query": body["query"], "pagination": {"per_page": 151}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"][0]["code"], "parameter_invalid");
    let (status, _) = search(&fake, &json!({"query": body["query"], "pagination": {"per_page": 150}})).await;
    assert_eq!(status, StatusCode::OK);

    let (status, v) = search(&fake, &json!({"query": {"field": "body", "operator": "~", "value": "x"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("unsupported field"));

    let resp = client()
        .post(&url)
        .bearer_auth(fake.token())
        .header("Intercom-Version", "v2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "intercom_version_invalid");

    let resp = client()
        .post(&url)
        .bearer_auth(fake.token())
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let c = fake.counters();
    assert_eq!(c.unauthorized, 3);
    assert_eq!(c.not_acceptable, 2);
    assert_eq!(c.cursor_rejections, 1);
    assert_eq!(c.cursor_expired, 0);
    assert_eq!(c.bad_requests, 4);
    assert_eq!(c.intercom_versions.get("(none)"), Some(&7));
}

#[tokio::test]
async fn rate_limit_headers_count_down_then_429() {
    // A manual clock at the start of a window makes this exact.
    let clock = Clock::manual(NOW + 3);
    let fake =
        fake(IntercomConfig::default().with_conversations(20).with_rate_limit(5).with_clock(clock.clone())).await;
    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}});
    for remaining in (0..5).rev() {
        let resp = search_raw(&fake, &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["x-ratelimit-limit"], "5");
        assert_eq!(h["x-ratelimit-remaining"], remaining.to_string().as_str());
        assert_eq!(h["x-ratelimit-reset"], (NOW + 10).to_string().as_str());
    }
    let resp = search_raw(&fake, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(resp.headers()["x-ratelimit-reset"], (NOW + 10).to_string().as_str());
    assert!(!resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["errors"],
        json!([{"code": "rate_limit_exceeded", "message": "Exceeded rate limit of 5 in 10_seconds"}])
    );
    assert_eq!(fake.counters().rate_limited, 1);

    // Retry-After on demand.
    fake.update_faults(|f| f.retry_after = true);
    let resp = search_raw(&fake, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");

    // The next window starts afresh.
    clock.advance(Duration::from_secs(7));
    let resp = search_raw(&fake, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "4");
    assert_eq!(resp.headers()["x-ratelimit-reset"], (NOW + 20).to_string().as_str());
}

#[tokio::test]
async fn server_error_and_rate_limit_faults_fall_on_their_n() {
    let fake = fake(IntercomConfig::default().with_conversations(30)).await;
    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}, "pagination": {"per_page": 5}});
    fake.set_faults(IntercomFaults { fail_every: Some(3), rate_limit_every: Some(4), ..IntercomFaults::default() });
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = search_raw(&fake, &body).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let v: Value = resp.json().await.unwrap();
        match status {
            500 => assert_eq!(v["errors"][0]["code"], "server_error"),
            429 => {
                assert_eq!(v["errors"][0]["code"], "rate_limit_exceeded");
                assert_eq!(headers["x-ratelimit-remaining"], "0");
                assert!(headers.contains_key("x-ratelimit-reset"));
            }
            _ => assert_eq!(v["type"], "conversation.list"),
        }
        statuses.push(status);
    }
    assert_eq!(statuses, vec![200, 200, 500, 429, 200, 500, 200, 429]);
    let c = fake.counters();
    assert_eq!(c.faults.server_error, 2);
    assert_eq!(c.faults.rate_limit, 2);
    assert_eq!(c.pages_served, 4);

    // Retry-After on injected 429s when asked for.
    fake.set_faults(IntercomFaults { rate_limit_every: Some(1), retry_after: true, ..IntercomFaults::default() });
    let resp = search_raw(&fake, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
}

#[tokio::test]
async fn dropped_connections_are_transport_errors() {
    let fake = fake(IntercomConfig::default().with_conversations(30)).await;
    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}});

    fake.set_faults(IntercomFaults { drop_every: Some(2), ..IntercomFaults::default() });
    assert_eq!(search_raw(&fake, &body).await.status(), StatusCode::OK);
    let resp = search_raw(&fake, &body).await;
    assert_eq!(resp.status(), StatusCode::OK, "mid-body: the head arrives");
    let err = resp.bytes().await.expect_err("the body is cut");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    // The client recovers on a new connection.
    assert_eq!(search_raw(&fake, &body).await.status(), StatusCode::OK);

    fake.set_faults(IntercomFaults {
        script: vec![FaultKind::Drop],
        drop_mode: DropMode::BeforeHeaders,
        ..IntercomFaults::default()
    });
    let err = client()
        .post(format!("{}/conversations/search", fake.base_url()))
        .bearer_auth(fake.token())
        .json(&body)
        .send()
        .await
        .expect_err("no response at all");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(search_raw(&fake, &body).await.status(), StatusCode::OK);
    assert_eq!(fake.counters().faults.drop, 2);
}

#[tokio::test]
async fn malformed_bodies_latency_script_and_targets() {
    let fake = fake(IntercomConfig::default().with_conversations(30)).await;
    let ds = fake.dataset();
    let id = ds.all()[0].id.clone();
    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}});

    // Faults on `get` only: search is untouched.
    fake.set_faults(IntercomFaults {
        endpoints: IntercomTarget::Get,
        malformed_every: Some(1),
        latency_ms: 150,
        ..IntercomFaults::default()
    });
    let t = Instant::now();
    let (status, _) = search(&fake, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_millis(150));
    let t = Instant::now();
    let resp = get_conv(&fake, &id).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "truncated JSON: {text}");
    assert!(text.starts_with('{'));

    // A script: two 500s, one pass, then a malformed page; then nothing.
    fake.set_faults(IntercomFaults {
        script: vec![FaultKind::ServerError, FaultKind::ServerError, FaultKind::None, FaultKind::Malformed],
        ..IntercomFaults::default()
    });
    let mut statuses = Vec::new();
    let mut parsed = Vec::new();
    for _ in 0..5 {
        let resp = search_raw(&fake, &body).await;
        statuses.push(resp.status().as_u16());
        parsed.push(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_ok());
    }
    assert_eq!(statuses, vec![500, 500, 200, 200, 200]);
    assert_eq!(parsed, vec![true, true, true, false, true]);
    assert!(fake.faults().script.is_empty());

    let c = fake.counters();
    assert_eq!(c.faults.malformed, 2);
    assert_eq!(c.faults.server_error, 2);
    assert_eq!(c.faults.latency, 1);
}

#[tokio::test]
async fn cursors_expire_and_can_be_invalidated() {
    let clock = Clock::manual(NOW);
    let fake = fake(
        IntercomConfig::default()
            .with_conversations(100)
            .with_clock(clock.clone())
            .with_faults(IntercomFaults { cursor_ttl_secs: Some(60), ..IntercomFaults::default() }),
    )
    .await;
    let q = json!({"field": "updated_at", "operator": ">", "value": 0});
    let first =
        json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 10}});
    let (_, page) = search(&fake, &first).await;
    let cursor = page["pages"]["next"]["starting_after"].as_str().unwrap().to_string();
    let next = json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 10, "starting_after": cursor}});

    clock.advance(Duration::from_secs(60));
    let (status, page2) = search(&fake, &next).await;
    assert_eq!(status, StatusCode::OK, "within the TTL");
    assert_eq!(page2["pages"]["page"], 2);

    clock.advance(Duration::from_secs(1));
    let (status, v) = search(&fake, &next).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"][0]["code"], "client_error");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("expired"), "{v}");

    // A cursor of another sort is refused too.
    let (_, page) = search(&fake, &first).await;
    let cursor = page["pages"]["next"]["starting_after"].as_str().unwrap().to_string();
    let other_sort = json!({"query": q, "sort": {"field": "created_at", "order": "ascending"}, "pagination": {"starting_after": cursor}});
    let (status, _) = search(&fake, &other_sort).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Invalidation: fresh cursors stop working at once.
    let next = json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 10, "starting_after": cursor}});
    assert_eq!(search(&fake, &next).await.0, StatusCode::OK);
    fake.invalidate_cursors();
    assert_eq!(search(&fake, &next).await.0, StatusCode::BAD_REQUEST);
    // A new first page issues cursors that work.
    clock.advance(Duration::from_millis(5));
    let (_, page) = search(&fake, &first).await;
    let cursor = page["pages"]["next"]["starting_after"].as_str().unwrap().to_string();
    let next = json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 10, "starting_after": cursor}});
    assert_eq!(search(&fake, &next).await.0, StatusCode::OK);

    let c = fake.counters();
    assert_eq!(c.cursor_rejections, 3);
    assert_eq!(c.cursor_expired, 2);
}

#[tokio::test]
async fn faults_and_counters_over_http_control_endpoints() {
    let fake = fake(IntercomConfig::default().with_conversations(10)).await;
    let base = fake.base_url();
    let resp = client()
        .post(format!("{base}/_testkit/faults"))
        .json(&json!({"fail_every": 1, "endpoints": "search"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let f: Value = resp.json().await.unwrap();
    assert_eq!(f["fail_every"], 1);
    assert_eq!(fake.faults().fail_every, Some(1));
    assert_eq!(fake.faults().endpoints, IntercomTarget::Search);

    let body = json!({"query": {"field": "updated_at", "operator": ">", "value": 0}});
    assert_eq!(search(&fake, &body).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let bad = client().post(format!("{base}/_testkit/faults")).json(&json!({"fail_evry": 1})).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    client().post(format!("{base}/_testkit/faults")).json(&json!({"fail_every": null})).send().await.unwrap();
    assert_eq!(search(&fake, &body).await.0, StatusCode::OK);

    let c: Value = client().get(format!("{base}/_testkit/counters")).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["search_requests"], 2);
    assert_eq!(c["faults"]["server_error"], 1);

    let rows: Value = client().get(format!("{base}/_testkit/dataset")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 10);

    client().post(format!("{base}/_testkit/reset")).send().await.unwrap();
    assert_eq!(fake.counters().requests(), 0);
}

#[tokio::test]
async fn a_conversation_updated_mid_backfill_is_listed_again() {
    let fake = fake(IntercomConfig::default().with_conversations(100)).await;
    let q = json!({"field": "updated_at", "operator": ">", "value": 0});
    let first =
        json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 20}});
    let (_, page) = search(&fake, &first).await;
    let early = ids_of(&page)[0].clone();
    let cursor = page["pages"]["next"]["starting_after"].as_str().unwrap().to_string();
    assert!(fake.touch(&early, NOW + 1));
    let mut ids = ids_of(&page);
    let mut cursor = Some(cursor);
    while let Some(c) = cursor {
        let body = json!({"query": q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": 20, "starting_after": c}});
        let (_, page) = search(&fake, &body).await;
        ids.extend(ids_of(&page));
        cursor = page["pages"].get("next").map(|n| n["starting_after"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 101);
    assert_eq!(ids.last(), Some(&early));
}

#[tokio::test]
async fn dataset_is_deterministic_with_themes_and_short_bodies() {
    let config = IntercomConfig {
        dataset: DatasetSpec {
            conversations: 400,
            days: 30,
            now: 1_700_000_000,
            seed: 11,
            short_fraction: 0.25,
            ..DatasetSpec::default()
        },
        ..IntercomConfig::default()
    };
    let a = fake(config.clone()).await;
    let b = fake(config).await;
    assert_eq!(a.dataset().all(), b.dataset().all());
    let ds = a.dataset();
    let short = ds.short_ids().len();
    assert!((60..=140).contains(&short), "{short}");
    assert!(ds.all().iter().all(|c| c.updated_at > 1_700_000_000 - 30 * 86_400 - 1));
    let billing = ds.all().iter().filter(|c| c.theme == Some(Theme::Billing)).count();
    assert!(billing > 20);
    for c in ds.all() {
        assert_eq!(ds.theme_of(&c.id), c.theme);
    }
}
