//! The fake OpenAI API over real HTTP on loopback, with reqwest.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_testkit::intercom::DatasetSpec;
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::openai::model;
use sluice_testkit::{Clock, FakeOpenAi, FaultKind, OpenAiConfig, OpenAiFaults, Theme};

const SYSTEM: &str = "You classify customer support conversations.\nCategories: billing, account_access, bug, feature_request, other.\nAnswer in JSON with category, confidence and reason.";

async fn fake(config: OpenAiConfig) -> FakeOpenAi {
    FakeOpenAi::start(config).await.expect("fake openai starts")
}

async fn chat_raw(fake: &FakeOpenAi, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .bearer_auth(fake.key())
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn chat(fake: &FakeOpenAi, system: &str, user: &str) -> (StatusCode, Value) {
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    });
    let resp = chat_raw(fake, &body).await;
    (resp.status(), resp.json().await.expect("json body"))
}

fn content(v: &Value) -> Value {
    let text = v["choices"][0]["message"]["content"].as_str().expect("content is a string");
    serde_json::from_str(text).expect("content is JSON")
}

async fn embed_raw(fake: &FakeOpenAi, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/embeddings", fake.base_url()))
        .bearer_auth(fake.key())
        .json(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn chat_completion_classifies_into_the_given_categories() {
    let fake = fake(OpenAiConfig::default()).await;
    let (status, v) = chat(&fake, SYSTEM, "<p>Hi,</p><p>I was charged twice for my invoice this month.</p>").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    let c = content(&v);
    assert_eq!(c["category"], "billing");
    assert!(c["confidence"].as_f64().unwrap() > 0.5);
    assert!(c["reason"].as_str().unwrap().contains("charged"));

    // Shipping is not in the list: the "other"-like category is chosen.
    let (_, v) = chat(&fake, SYSTEM, "My package was delivered to the wrong address").await;
    assert_eq!(content(&v)["category"], "other");
    // Without a list: the fake's own names.
    let (_, v) = chat(&fake, "Classify this. Reply in JSON.", "My package was delivered to the wrong address").await;
    assert_eq!(content(&v)["category"], "shipping");

    // Every generated conversation gets its theme's category.
    let ds = sluice_testkit::intercom::Dataset::generate(&DatasetSpec { conversations: 60, ..DatasetSpec::default() });
    let categories: Vec<String> =
        ["billing", "account_access", "bug", "feature_request", "other"].iter().map(|s| s.to_string()).collect();
    for conv in ds.all() {
        let (_, v) = chat(&fake, SYSTEM, &conv.body).await;
        let got = content(&v)["category"].as_str().unwrap().to_string();
        assert!(categories.contains(&got), "{got}");
        let want = model::pick_category(conv.theme, Some(&categories));
        assert_eq!(got, want, "conversation {} ({:?})", conv.id, conv.theme);
        if conv.theme == Some(Theme::Bug) {
            assert_eq!(got, "bug");
        }
    }
    let counters = fake.counters();
    assert_eq!(counters.chat_completions, 63);
    assert_eq!(counters.chat_modes.get("classify"), Some(&63));
    assert!(counters.prompt_tokens > 0);
}

#[tokio::test]
async fn json_schema_enum_facets_and_theme_labels() {
    let fake = fake(OpenAiConfig::default()).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "developer", "content": "Classify."}, {"role": "user", "content": [{"type": "text", "text": "The app crashes on start"}]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "strict": true, "schema": {
            "type": "object",
            "properties": {"category": {"type": "string", "enum": ["Refunds", "Technical problem", "Misc"]}, "confidence": {"type": "number"}},
        }}},
    });
    let v: Value = chat_raw(&fake, &body).await.json().await.unwrap();
    assert_eq!(content(&v)["category"], "Technical problem");

    let (_, v) = chat(
        &fake,
        "Extract facets as JSON: product_area, sentiment, intent.",
        "I can't log in, the password reset never arrives",
    )
    .await;
    let f = content(&v);
    assert_eq!(f["product_area"], "authentication");
    assert_eq!(f["intent"], "regain_access");
    assert_eq!(f["sentiment"], "negative");

    let (_, v) = chat(
        &fake,
        "Give this group of conversations a short label and a one-line summary, as JSON.",
        "1. The dashboard is slow\n2. Search takes forever\n3. I need a refund",
    )
    .await;
    let t = content(&v);
    assert_eq!(t["label"], "Slow performance");
    assert!(t["summary"].is_string());
    let c = fake.counters();
    assert_eq!(c.chat_modes.get("facets"), Some(&1));
    assert_eq!(c.chat_modes.get("theme_label"), Some(&1));
}

#[tokio::test]
async fn auth_and_request_validation_errors() {
    let fake = fake(OpenAiConfig::default().with_key("sk-right-key-0000")).await;
    let url = format!("{}/v1/chat/completions", fake.base_url());
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let resp = reqwest::Client::new().post(&url).bearer_auth("sk-wrong-key-1234").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["param"], Value::Null);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Incorrect API key provided: sk-"), "{msg}");
    assert!(!msg.contains("sk-wrong-key-1234"), "the key is masked");

    let resp = reqwest::Client::new().post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().starts_with("You didn't provide an API key"));

    let bad = |body: Value| {
        let fake = &fake;
        async move {
            let resp = chat_raw(fake, &body).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
            v
        }
    };
    let v = bad(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})).await;
    assert_eq!(
        v["error"]["message"],
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
    );
    let v = bad(json!({"model": "m"})).await;
    assert_eq!(v["error"]["code"], "missing_required_parameter");
    let v = bad(json!({"model": "m", "messages": []})).await;
    assert_eq!(v["error"]["code"], "empty_array");
    bad(json!({"messages": [{"role": "user", "content": "hi"}]})).await;
    bad(json!({"model": "m", "messages": [{"role": "robot", "content": "hi"}]})).await;
    bad(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3})).await;
    assert_eq!(fake.counters().bad_requests, 6);
    assert_eq!(fake.counters().unauthorized, 2);
}

#[tokio::test]
async fn embeddings_have_the_asked_dimensions_and_unit_norm() {
    let fake = fake(OpenAiConfig::default()).await;
    let texts = ["I was charged twice for my invoice", "I was charged twice for my last invoice", "The app crashes"];
    let resp = embed_raw(&fake, &json!({"model": "text-embedding-3-small", "input": texts})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-ratelimit-remaining-requests"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);
    let vecs: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            serde_json::from_value(d["embedding"].clone()).unwrap()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    for (vec, text) in vecs.iter().zip(texts) {
        assert_eq!(vec.len(), 64, "default dimensions");
        let norm: f64 = vec.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(vec, &model::embed(text, 64));
    }
    assert!(model::cosine(&vecs[0], &vecs[1]) > model::cosine(&vecs[0], &vecs[2]));

    let v: Value = embed_raw(&fake, &json!({"model": "text-embedding-3-small", "input": "hello", "dimensions": 256}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);

    let v: Value =
        embed_raw(&fake, &json!({"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"}))
            .await
            .json()
            .await
            .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats, model::embed("hello", 64));

    for bad in [
        json!({"model": "text-embedding-3-small", "input": ""}),
        json!({"model": "text-embedding-3-small", "input": []}),
        json!({"model": "text-embedding-3-small", "input": ["ok", ""]}),
        json!({"model": "text-embedding-3-small"}),
        json!({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}),
        json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 0}),
    ] {
        let resp = embed_raw(&fake, &bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let c = fake.counters();
    assert_eq!(c.embedding_responses, 3);
    assert_eq!(c.embedded_inputs, 5);
    assert_eq!(fake.embedding_count("hello"), 2);
    assert_eq!(c.max_embedding_repeats, 2);
}

#[tokio::test]
async fn rate_limit_headers_and_429_with_retry_after() {
    let clock = Clock::manual(1_767_225_600 + 45);
    let fake = fake(OpenAiConfig::default().with_rpm_limit(3).with_clock(clock.clone())).await;
    for remaining in ["2", "1", "0"] {
        let resp = chat_raw(&fake, &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["x-ratelimit-limit-requests"], "3");
        assert_eq!(h["x-ratelimit-remaining-requests"], remaining);
        assert_eq!(h["x-ratelimit-reset-requests"], "15s");
        assert!(h.contains_key("x-ratelimit-limit-tokens"));
        assert!(h.contains_key("x-ratelimit-remaining-tokens"));
        assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    }
    let resp = chat_raw(&fake, &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "15");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Rate limit reached for m"));
    assert_eq!(fake.counters().rate_limited, 1);

    // The next minute starts afresh.
    clock.advance(Duration::from_secs(15));
    let resp = chat_raw(&fake, &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "2");
    assert_eq!(resp.headers()["x-ratelimit-reset-requests"], "1m0s");
}

#[tokio::test]
async fn injected_faults_fall_on_their_n() {
    let fake = fake(OpenAiConfig::default()).await;
    fake.set_faults(OpenAiFaults {
        endpoints: OpenAiTarget::Chat,
        fail_every: Some(2),
        rate_limit_every: Some(3),
        malformed_every: Some(5),
        ..OpenAiFaults::default()
    });
    let mut seen = Vec::new();
    for i in 0..6 {
        let (status, v) = chat(&fake, SYSTEM, &format!("refund number {i}")).await;
        let tag = match status.as_u16() {
            200 => {
                let text = v["choices"][0]["message"]["content"].as_str().unwrap();
                if serde_json::from_str::<Value>(text).is_ok() { "ok" } else { "malformed" }
            }
            500 => {
                assert_eq!(v["error"]["type"], "server_error");
                "500"
            }
            429 => {
                assert_eq!(v["error"]["code"], "rate_limit_exceeded");
                "429"
            }
            other => panic!("{other}"),
        };
        seen.push(tag);
    }
    assert_eq!(seen, vec!["ok", "500", "429", "500", "malformed", "500"]);
    // Embeddings are not targeted.
    assert_eq!(embed_raw(&fake, &json!({"model": "e", "input": "x"})).await.status(), StatusCode::OK);

    // Injected 429s carry retry-after.
    fake.set_faults(OpenAiFaults {
        script: vec![FaultKind::RateLimit, FaultKind::Malformed],
        retry_after_secs: 2,
        ..OpenAiFaults::default()
    });
    let resp = embed_raw(&fake, &json!({"model": "e", "input": "x"})).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    let resp = embed_raw(&fake, &json!({"model": "e", "input": "x"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err(), "truncated embeddings body");

    let c = fake.counters();
    assert_eq!(c.faults.server_error, 3);
    assert_eq!(c.faults.rate_limit, 2);
    assert_eq!(c.faults.malformed, 2);
    // Only paid answers count: "refund number 0" and "refund number 4".
    assert_eq!(c.chat_completions, 2);
    assert_eq!(fake.chat_count("refund number 0"), 1);
    assert_eq!(fake.chat_count("refund number 1"), 0);
    assert_eq!(fake.chat_count("refund number 4"), 1);
    assert_eq!(c.max_chat_repeats, 1);
    assert_eq!(c.embedding_responses, 1);
}

#[tokio::test]
async fn repeated_inputs_are_counted_and_drops_are_transport_errors() {
    let fake = fake(OpenAiConfig::default()).await;
    for _ in 0..3 {
        chat(&fake, SYSTEM, "same text").await;
    }
    chat(&fake, SYSTEM, "other text").await;
    let c = fake.counters();
    assert_eq!(c.distinct_chat_inputs, 2);
    assert_eq!(c.max_chat_repeats, 3);
    assert_eq!(fake.chat_count("same text"), 3);
    assert_eq!(fake.chat_input_counts().get(&sluice_testkit::text_hash("other text")), Some(&1));

    fake.set_faults(OpenAiFaults { drop_every: Some(1), ..OpenAiFaults::default() });
    let resp = chat_raw(&fake, &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert!(resp.bytes().await.is_err());

    // Control endpoint.
    let resp = reqwest::Client::new()
        .post(format!("{}/_testkit/faults", fake.base_url()))
        .json(&json!({"drop_every": null, "latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fake.faults().drop_every, None);
    let (status, _) = chat(&fake, SYSTEM, "after").await;
    assert_eq!(status, StatusCode::OK);
    fake.reset_counters();
    assert_eq!(fake.counters().chat_requests, 0);
    assert_eq!(fake.chat_count("same text"), 0);

    let resp = reqwest::Client::new()
        .get(format!("{}/v1/models", fake.base_url()))
        .bearer_auth(fake.key())
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
}

#[tokio::test]
async fn latency_is_the_time_to_the_answer_and_an_answer_is_tallied_when_sent() {
    let latency = Duration::from_millis(1500);
    let faults = OpenAiFaults { latency_ms: 1500, refuse_base64: true, ..OpenAiFaults::default() };
    let fake = fake(OpenAiConfig::default().with_faults(faults)).await;
    let sent = std::time::Instant::now();
    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
    let answer = tokio::spawn({
        let (url, key) = (format!("{}/v1/embeddings", fake.base_url()), fake.key().to_string());
        async move { reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.expect("sent") }
    });
    while fake.counters().embedding_requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.counters().embedding_responses, 0, "arrived, worked out, but not yet answered");
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(sent.elapsed() >= latency, "answered after {:?}", sent.elapsed());
    assert_eq!((fake.counters().embedding_responses, fake.counters().embedded_inputs), (1, 2));

    // Refusals wait as long; a float-only server refuses base64, naming the parameter.
    let sent = std::time::Instant::now();
    let refused =
        embed_raw(&fake, &json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"})).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(sent.elapsed() >= latency, "refused after {:?}", sent.elapsed());
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["param"], "encoding_format", "{error}");
}
