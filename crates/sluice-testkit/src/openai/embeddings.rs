//! The fake OpenAI's `POST /v1/embeddings`: input validation and
//! deterministic vectors from [`super::model::embed`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::config::ApiEndpoint;
use super::model;
use super::pipeline::{Answer, Tally, UNPARSABLE, bad_request, handle, model_of};
use super::state::Shared;
use crate::rng::text_hash;

/// `POST /v1/embeddings`.
pub(super) async fn embeddings_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let model_name = model_of(&parsed);
    handle(shared, ApiEndpoint::Embeddings, headers, model_name, move |s, _| embeddings(s, parsed)).await
}

const INPUT_INVALID: &str =
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

fn embeddings(shared: &Shared, body: Option<Value>) -> Answer {
    let Some(body) = body.filter(Value::is_object) else {
        return bad_request(UNPARSABLE, None, None);
    };
    let Some(model_name) = body.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter", None, None);
    };
    let Some(input) = body.get("input") else {
        return bad_request("Missing required parameter: 'input'.", Some("input"), Some("missing_required_parameter"));
    };
    // Each input's text, and its length in tokens when it was sent as token ids.
    let token_text = |v: &Value| -> Option<(String, u64)> {
        let arr = v.as_array()?;
        let toks: Option<Vec<String>> = arr.iter().map(|t| t.as_u64().map(|n| n.to_string())).collect();
        toks.map(|t| (t.join(" "), t.len() as u64)).filter(|(s, _)| !s.is_empty())
    };
    let inputs: Vec<(String, Option<u64>)> = match input {
        Value::String(s) if !s.is_empty() => vec![(s.clone(), None)],
        Value::Array(items) if !items.is_empty() && items.len() <= 2048 => {
            if items.iter().all(Value::is_u64) {
                match token_text(input) {
                    Some((t, n)) => vec![(t, Some(n))],
                    None => return bad_request(INPUT_INVALID, None, None),
                }
            } else {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Value::String(s) if !s.is_empty() => out.push((s.clone(), None)),
                        Value::Array(_) => match token_text(it) {
                            Some((t, n)) => out.push((t, Some(n))),
                            None => return bad_request(INPUT_INVALID, None, None),
                        },
                        _ => return bad_request(INPUT_INVALID, None, None),
                    }
                }
                out
            }
        }
        _ => return bad_request(INPUT_INVALID, None, None),
    };
    let (limit, refused, float_only) = {
        let m = shared.lock();
        let settings = m.faults.settings();
        (settings.max_input_tokens, settings.refuse_inputs_containing.clone(), settings.refuse_base64)
    };
    for (i, (text, ids)) in inputs.iter().enumerate() {
        if let Some(marker) = refused.iter().find(|m| !m.is_empty() && text.contains(m.as_str())) {
            return bad_request(
                &format!("Invalid 'input[{i}]': the input contains content that cannot be embedded ({marker:?})."),
                Some("input"),
                Some("invalid_value"),
            );
        }
        let tokens = match ids {
            Some(n) => Some(*n).filter(|n| *n > limit),
            None => tokens_over(text, limit),
        };
        if let Some(tokens) = tokens {
            return bad_request(
                &format!(
                    "This model's maximum context length is {limit} tokens, however you requested {tokens} tokens \
                     ({tokens} in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
                ),
                None,
                None,
            );
        }
    }
    let texts: Vec<String> = inputs.into_iter().map(|(t, _)| t).collect();
    let dims = match body.get("dimensions").filter(|v| !v.is_null()) {
        None => shared.default_dimensions,
        Some(_) if model_name == "text-embedding-ada-002" => {
            return bad_request("This model does not support specifying dimensions.", None, None);
        }
        Some(v) => match v.as_u64() {
            Some(d) if (1..=3072).contains(&d) => d as usize,
            _ => {
                return bad_request(
                    &format!("Invalid value for 'dimensions' = {v}. Must be an integer between 1 and 3072."),
                    Some("dimensions"),
                    Some("invalid_value"),
                );
            }
        },
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") if !float_only => true,
        Some(other) if float_only => {
            return bad_request(
                &format!("Invalid value for 'encoding_format': '{other}'. Supported values are: 'float'."),
                Some("encoding_format"),
                Some("invalid_value"),
            );
        }
        Some(other) => {
            return bad_request(
                &format!("Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."),
                Some("encoding_format"),
                Some("invalid_value"),
            );
        }
    };
    let tokens: u64 = texts.iter().map(|t| model::approx_tokens(t)).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = model::embed(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Answer {
        status: StatusCode::OK,
        body: json!({
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        tally: Tally::Embeddings { inputs: texts.iter().map(|t| text_hash(t)).collect(), tokens },
    }
}

/// The tokens of `text` (as OpenAI's embedding models count them,
/// cl100k_base) when they are more than `limit`. A token is at least one
/// byte, so a text of at most `limit` bytes is not tokenized at all.
fn tokens_over(text: &str, limit: u64) -> Option<u64> {
    if text.len() as u64 <= limit {
        return None;
    }
    Some(tiktoken_rs::cl100k_base_singleton().encode_ordinary(text).len() as u64).filter(|n| *n > limit)
}
