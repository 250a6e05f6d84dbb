//! Who may do what. With `SLUICE_API_TOKEN` set, mutations need
//! `Authorization: Bearer <token>` (checked by their handlers); with reads
//! protected (`--protect-reads`, or a bind beyond loopback) every endpoint but
//! `/healthz` needs it. A reader without the token never sees a URL: run
//! errors name provider base URLs, and the store's description may be one.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper::body::Body as HttpBody;

use super::error::ApiError;

/// The endpoint that stays open to everyone (load balancers, probes).
pub const OPEN_PATH: &str = "/healthz";

/// What replaces a URL in answers to a reader without the token.
pub const HIDDEN_URL: &str = "<url hidden>";

#[derive(Clone, Debug)]
pub struct Access {
    pub token: Option<Arc<str>>,
    /// Reads need the token too.
    pub protect_reads: bool,
}

/// `Ok` when no token is set or the request carries it.
pub fn check_token(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API token")),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <SLUICE_API_TOKEN>")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Some(token) = access.token.as_deref() else { return next.run(request).await };
    match check_token(Some(token), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) if access.protect_reads && request.uri().path() != OPEN_PATH => refused.into_response(),
        Err(_) => hide_urls(next.run(request).await).await,
    }
}

/// The response with every URL in its body replaced by `HIDDEN_URL`.
async fn hide_urls(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if body.size_hint().exact().is_some() {
        // A whole answer (JSON): rewritten at once, so no URL is split between chunks.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let text = hide_urls_in(&String::from_utf8_lossy(&bytes)).into_owned();
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        return Response::from_parts(parts, Body::from(text));
    }
    // A stream (server-sent events): one event per chunk.
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map(|bytes| Bytes::from(hide_urls_in(&String::from_utf8_lossy(&bytes)).into_owned())));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `text` with each `scheme://...` replaced by `HIDDEN_URL`. A URL ends at
/// whitespace, a quote, a backslash or a bracket, so JSON stays JSON.
pub fn hide_urls_in(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(found) = text[i..].find("://") {
        let at = i + found;
        let mut start = at;
        while start > copied && (bytes[start - 1].is_ascii_alphanumeric() || b"+.-".contains(&bytes[start - 1])) {
            start -= 1;
        }
        if start == at || !bytes[start].is_ascii_alphabetic() {
            i = at + 3;
            continue;
        }
        let mut end = at + 3;
        while end < bytes.len() && !ends_url(bytes[end]) {
            end += 1;
        }
        out.push_str(&text[copied..start]);
        out.push_str(HIDDEN_URL);
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'\\<>()[]{},;`".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_hidden_and_json_stays_json() {
        let doc = serde_json::json!({
            "error": "Intercom search: HTTP 404: check the base URL (US https://api.intercom.io, EU https://api.eu.intercom.io/x?y=1)",
            "other": "sqlite:/tmp/a.db; postgres://user@db.internal:5432/x\nnext",
        })
        .to_string();
        let hidden = hide_urls_in(&doc);
        let back: serde_json::Value = serde_json::from_str(&hidden).unwrap();
        assert_eq!(back["error"], "Intercom search: HTTP 404: check the base URL (US <url hidden>, EU <url hidden>)");
        assert_eq!(back["other"], "sqlite:/tmp/a.db; <url hidden>\nnext");
        assert!(!hidden.contains("://"));
    }

    #[test]
    fn text_without_urls_is_untouched() {
        for text in ["", "://", "a :// b", "run 3 started; monitor /api/pipeline/status/3", "1://x"] {
            assert_eq!(hide_urls_in(text), text, "{text}");
        }
    }
}
