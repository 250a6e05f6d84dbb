//! The fake OpenAI's `POST /v1/chat/completions`: request validation and a
//! `chat.completion` whose content [`super::model`] chooses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::config::ApiEndpoint;
use super::model;
use super::pipeline::{Answer, Tally, UNPARSABLE, bad_request, handle, model_of};
use super::state::Shared;
use crate::faults::FaultKind;
use crate::rng::text_hash;
use crate::server;

/// `POST /v1/chat/completions`.
pub(super) async fn chat_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let model_name = model_of(&parsed);
    handle(shared, ApiEndpoint::Chat, headers, model_name, move |s, fault| {
        chat(s, parsed, fault == FaultKind::Malformed)
    })
    .await
}

/// The text of a message's `content`: a string, or the `text` parts of an
/// array of content parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"))
        }
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn chat(shared: &Shared, body: Option<Value>, malformed: bool) -> Answer {
    let Some(body) = body.filter(Value::is_object) else {
        return bad_request(UNPARSABLE, None, None);
    };
    let Some(model_name) = body.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter", None, None);
    };
    let Some(messages) = body.get("messages") else {
        return bad_request(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        );
    };
    let Some(messages) = messages.as_array() else {
        return bad_request(
            &format!("Invalid type for 'messages': expected an array, but got {messages} instead."),
            Some("messages"),
            Some("invalid_type"),
        );
    };
    if messages.is_empty() {
        return bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        );
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return bad_request("sluice-testkit does not model stream=true", Some("stream"), None);
    }
    if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
        match t.as_f64() {
            Some(x) if (0.0..=2.0).contains(&x) => {}
            Some(x) if x > 2.0 => {
                return bad_request(
                    &format!(
                        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {x} instead."
                    ),
                    Some("temperature"),
                    Some("decimal_above_max_value"),
                );
            }
            _ => {
                return bad_request(
                    &format!("Invalid 'temperature': expected a number between 0 and 2, but got {t} instead."),
                    Some("temperature"),
                    Some("invalid_value"),
                );
            }
        }
    }
    let mut system = String::new();
    let mut last_user: Option<String> = None;
    let mut all_text = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return bad_request(
                &format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'."
                ),
                Some(&format!("messages[{i}].role")),
                Some("invalid_value"),
            );
        }
        let Some(text) = msg.get("content").and_then(content_text) else {
            return bad_request(
                &format!("Invalid type for 'messages[{i}].content'."),
                Some(&format!("messages[{i}].content")),
                Some("invalid_type"),
            );
        };
        all_text.push_str(&text);
        all_text.push('\n');
        match role {
            "system" | "developer" => {
                system.push_str(&text);
                system.push('\n');
            }
            "user" => last_user = Some(text),
            _ => {}
        }
    }
    let mut schema: Option<&Value> = None;
    if let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                if !all_text.to_lowercase().contains("json") {
                    return bad_request(
                        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                        Some("messages"),
                        None,
                    );
                }
            }
            Some("json_schema") => match rf.get("json_schema") {
                Some(js) if js.is_object() => schema = Some(js),
                _ => {
                    return bad_request(
                        "Missing required parameter: 'response_format.json_schema'.",
                        Some("response_format.json_schema"),
                        Some("missing_required_parameter"),
                    );
                }
            },
            _ => {
                return bad_request(
                    "Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.",
                    Some("response_format.type"),
                    Some("invalid_value"),
                );
            }
        }
    }
    let user = last_user.unwrap_or_default();
    let mode = model::detect_mode(&system, schema);
    let categories = model::parse_categories(&system, schema);
    let content = if malformed {
        model::malformed_answer(mode, categories.as_deref(), &user)
    } else {
        model::answer(mode, categories.as_deref(), &user)
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 8);
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| m.get("content").and_then(content_text).map(|t| model::approx_tokens(&t)).unwrap_or(0) + 4)
        .sum::<u64>()
        + 3;
    let completion_tokens = model::approx_tokens(&content) * n;
    let counter = {
        let m = shared.lock();
        m.requests
    };
    let id = format!("chatcmpl-{}", server::request_id(shared.seed ^ 0xc4a7, counter).trim_start_matches('0'));
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop",
            })
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": shared.clock.now_secs(),
        "model": model_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_testkit",
    });
    Answer {
        status: StatusCode::OK,
        body,
        tally: Tally::Chat { input: text_hash(&user), mode, prompt: prompt_tokens, completion: completion_tokens },
    }
}
