//! What the HTTP connectors share: `Retry-After` parsing, jitter, short
//! excerpts of error bodies, and the environment look-ups for base URLs and
//! keys.

// Each helper serves some of intercom, crawl and openai; a build with fewer leaves some unused.
#![cfg_attr(not(all(feature = "intercom", feature = "crawl", feature = "openai")), allow(dead_code))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::ConfigError;

/// A non-empty environment variable.
pub(crate) fn env_value(key: &str) -> Option<String> {
    std::env::var(key).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Checks an `http://` or `https://` base URL and drops its trailing slashes.
pub(crate) fn check_base_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(ConfigError(format!(
            "{key} = {url:?} is not a base URL (allowed: http://HOST[:PORT][/PATH] or https://...)"
        ))),
    }
}

/// Seconds since the Unix epoch, with fractions.
pub(crate) fn now_epoch_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// A random delay in `0..max`, so that clients released together do not hit
/// the server together.
pub(crate) fn jitter(max: Duration) -> Duration {
    let max_ms = max.as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(fastrand::u64(0..max_ms))
}

/// A header as text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds. The HTTP-date form
/// of `Retry-After` is not used by these APIs and is ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let secs = header_str(headers, "retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_millis((secs * 1000.0) as u64))
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// `code: message` of an error body shaped like Intercom's
/// (`{"errors": [{"code", "message"}]}`) or OpenAI's
/// (`{"error": {"code", "type", "message"}}`), else an excerpt of the raw body.
pub(crate) fn error_summary(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        return if text.trim().is_empty() { "(empty body)".to_string() } else { excerpt(&text, 200) };
    };
    let error = value.pointer("/errors/0").or_else(|| value.get("error")).unwrap_or(&value);
    let code = error.get("code").and_then(Value::as_str).or_else(|| error.get("type").and_then(Value::as_str));
    let message = error.get("message").and_then(Value::as_str).map(|m| excerpt(m, 300));
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message,
        (None, None) => excerpt(&value.to_string(), 200),
    }
}

/// The error `code` of an error body, when it has one.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<Value>(body).ok()?;
    let error = value.pointer("/errors/0").or_else(|| value.get("error"))?;
    error.get("code").and_then(Value::as_str).map(str::to_string)
}

/// Describes a transport error without its URL's query (which may carry
/// anything) and with its causes, e.g. "connection closed before message completed".
pub(crate) fn transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "connection dropped while reading the response"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    match causes.last() {
        Some(root) => format!("{kind} ({})", excerpt(root, 200)),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn error_bodies_are_summarized() {
        let intercom =
            br#"{"type":"error.list","errors":[{"code":"client_error","message":"Invalid starting_after param: x"}]}"#;
        assert_eq!(error_summary(intercom), "client_error: Invalid starting_after param: x");
        assert_eq!(error_code(intercom).as_deref(), Some("client_error"));
        let openai = br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_summary(openai), "rate_limit_exceeded: slow down");
        assert_eq!(error_summary(b"<html>bad gateway</html>"), "<html>bad gateway</html>");
        assert_eq!(error_summary(b""), "(empty body)");
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(check_base_url("k", "https://api.intercom.io/").unwrap(), "https://api.intercom.io");
        assert_eq!(check_base_url("k", "http://127.0.0.1:8002/v1").unwrap(), "http://127.0.0.1:8002/v1");
        let err = check_base_url("source.base_url", "api.intercom.io").unwrap_err().to_string();
        assert!(err.contains("source.base_url") && err.contains("api.intercom.io"), "{err}");
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("héllo", 2), "hé...");
        assert_eq!(excerpt("abc", 3), "abc");
    }
}
