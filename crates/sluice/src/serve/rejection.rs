//! One layer in front of every route: reads the request body within its
//! limits, and turns every error answer that is not already JSON (the
//! framework's own: wrong method, bad path encoding, a rejected extractor)
//! into `{"error": "...", "detail": ...}` with the same status and headers.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ErrorBody;
use super::limits::{DRAINED_BYTES, HttpLimits, read_body, too_large};

/// How much of a path an error message repeats.
const PATH_SHOWN: usize = 200;

pub async fn guard(State(limits): State<HttpLimits>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(PATH_SHOWN).collect();
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match declared {
        // Refused before reading it.
        Some(length) if length > DRAINED_BYTES => Err(too_large()),
        _ => read_body(body, &limits).await,
    };
    let response = match body {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        // The rest of the body is unread: the connection cannot carry another request.
        Err(error) => {
            let mut response = error.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    };
    as_json_error(response, &method, &path).await
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn as_json_error(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path} (allowed: {allow})"),
        StatusCode::NOT_FOUND => format!("no such endpoint: {method} {path}; see /openapi.json"),
        StatusCode::PAYLOAD_TOO_LARGE => too_large().error,
        _ if !text.is_empty() => text.clone(),
        _ => status.canonical_reason().unwrap_or("the request failed").to_string(),
    };
    let detail = if text.is_empty() || text == error { Value::Null } else { Value::String(text) };
    let json = serde_json::to_vec(&ErrorBody { error, detail }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json))
}
