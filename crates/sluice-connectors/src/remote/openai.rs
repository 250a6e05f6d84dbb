//! A small client for OpenAI-compatible APIs (`/chat/completions`,
//! `/embeddings`), shared by the LLM classifier and the OpenAI embedder:
//! base URL and key resolution, and the mapping of answers to errors.
//!
//! Base URL: the pipeline file's `base_url`, else `OPENAI_BASE_URL`, else
//! `https://api.openai.com/v1` (the URL includes `/v1`, as the OpenAI SDKs
//! expect). Key: the file's `api_key` (never saved with a run), else the
//! variable named by `api_key_env` (default `OPENAI_API_KEY`). The key only
//! ever goes into the `Authorization` header; no message repeats it, and a
//! 401's body (which may echo part of it) is not quoted.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sluice_core::{Context, RateLimit, StageError};

use crate::ConfigError;
use crate::remote::http::{check_base_url, env_value, error_code, error_summary, transport_error};
use crate::util::secret::Secret;

pub use super::endpoint::{BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_KEY_ENV, OpenAiEndpoint, UNAUTHORIZED};

impl OpenAiEndpoint {
    /// The API these settings name, resolved as the module docs say; `prefix`
    /// (e.g. `classify`) names the settings in messages. The time-out is
    /// clamped to 1..=600 s here; callers range-check it for the message.
    pub fn api(&self, prefix: &str) -> Result<OpenAiApi, ConfigError> {
        if let Some(rpm) = self.requests_per_minute
            && !(rpm.is_finite() && (0.1..=1_000_000.0).contains(&rpm))
        {
            return Err(ConfigError(format!(
                "{prefix}.requests_per_minute = {rpm} is out of range (allowed: 0.1..=1000000)"
            )));
        }
        let api = OpenAiApi::resolve(
            prefix,
            self.base_url.as_deref(),
            self.api_key.as_ref(),
            &self.api_key_env,
            Duration::from_secs(self.timeout_secs.clamp(1, 600)),
        )?;
        Ok(api.with_requests_per_minute(self.requests_per_minute))
    }
}

/// Why a request did not give a usable answer.
#[derive(Clone, Debug)]
pub enum ApiError {
    /// Rate limited, server error, dropped connection, truncated body: try again.
    Retryable { error_type: String, message: String, retry_after: Option<Duration> },
    /// The key, the quota, the model or the URL is wrong: no request will work.
    Batch(StageError),
    /// This request was refused (e.g. 400 for this input): retrying it will not help.
    Request(StageError),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Retryable { message, .. } => f.write_str(message),
            ApiError::Batch(e) | ApiError::Request(e) => f.write_str(&e.message),
        }
    }
}

impl ApiError {
    /// The error as a stage error for one record.
    pub fn into_stage_error(self) -> StageError {
        match self {
            ApiError::Retryable { error_type, message, retry_after } => {
                StageError { error_type, message, retryable: true, retry_after }
            }
            ApiError::Batch(e) | ApiError::Request(e) => e,
        }
    }
}

/// An OpenAI-compatible endpoint with its key.
#[derive(Clone, Debug)]
pub struct OpenAiApi {
    http: reqwest::Client,
    base_url: String,
    key: Secret,
    /// Names where the key came from, for messages (never the key itself).
    key_origin: String,
    /// The pace of requests per model (see [`OpenAiEndpoint::requests_per_minute`]).
    requests_per_minute: Option<f64>,
}

impl OpenAiApi {
    /// Resolves base URL and key as the module docs say. `prefix` (e.g.
    /// `classify`) names the settings in messages.
    pub fn resolve(
        prefix: &str,
        base_url: Option<&str>,
        api_key: Option<&Secret>,
        api_key_env: &str,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let base_url = match base_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => check_base_url(&format!("{prefix}.base_url"), url)?,
            None => match env_value(BASE_URL_ENV) {
                Some(url) => check_base_url(BASE_URL_ENV, &url)?,
                None => DEFAULT_BASE_URL.to_string(),
            },
        };
        let (key, key_origin) = match api_key.filter(|k| !k.is_empty()) {
            Some(key) => (key.clone(), format!("{prefix}.api_key")),
            None => {
                if api_key_env.trim().is_empty() {
                    return Err(ConfigError(format!("{prefix}.api_key_env = \"\" must name an environment variable")));
                }
                match env_value(api_key_env) {
                    Some(key) => (Secret::new(key), api_key_env.to_string()),
                    None => {
                        return Err(ConfigError(format!(
                            "{prefix}: no API key: set {api_key_env} (in the environment or .env){}",
                            if api_key_env == DEFAULT_KEY_ENV {
                                String::new()
                            } else {
                                format!(" as {prefix}.api_key_env says")
                            }
                        )));
                    }
                }
            }
        };
        Self::new(base_url, key, key_origin, timeout)
    }

    /// An API at `base_url` (already checked) with `key`.
    pub fn new(base_url: String, key: Secret, key_origin: String, timeout: Duration) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base_url, key, key_origin, requests_per_minute: None })
    }

    /// The same API paced at `rpm` requests per minute per model (`None`: only 429s pause).
    pub fn with_requests_per_minute(mut self, rpm: Option<f64>) -> Self {
        self.requests_per_minute = rpm;
        self
    }

    /// The rate-limit bucket of requests for `model`: OpenAI limits are per
    /// organization and model, so one bucket per base URL and model.
    pub fn rate_limit(&self, model: &str) -> RateLimit {
        RateLimit::new(format!("openai {} {model}", self.base_url), self.requests_per_minute)
    }

    /// [`Self::post`] paced by the run's [`sluice_core::Pacer`]: waits for the
    /// model's bucket first, and a 429 pauses every caller of the model (in
    /// every worker of a distributed run) for its `retry-after`.
    pub async fn post_paced(&self, ctx: &Context, adapter: &str, path: &str, body: &Value) -> Result<Value, ApiError> {
        let limit = self.rate_limit(body.get("model").and_then(Value::as_str).unwrap_or_default());
        ctx.pace(adapter, &limit).await;
        let answer = self.post(path, body).await;
        if let Err(ApiError::Retryable { error_type, retry_after, .. }) = &answer
            && error_type == "http_429"
        {
            ctx.pacer.pause(&limit.service, retry_after.unwrap_or(Duration::from_secs(1))).await;
        }
        answer
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POSTs `body` to `base_url + path` and returns the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base_url);
        let sent = self
            .http
            .post(&url)
            .bearer_auth(self.key.expose())
            .header("Accept", "application/json")
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(ApiError::Retryable {
                    error_type: "transport".into(),
                    message: format!("POST {url}: {}", transport_error(&e)),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| ApiError::Retryable {
            error_type: "transport".into(),
            message: format!("POST {url}: {}", transport_error(&e)),
            retry_after: None,
        })?;
        self.answer(&url, status, &headers, &bytes)
    }

    /// Maps an answer to its JSON or an error.
    fn answer(&self, url: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
        if status.is_success() {
            return serde_json::from_slice(body).map_err(|e| ApiError::Retryable {
                error_type: "malformed".into(),
                message: format!("POST {url}: the answer is not valid JSON (truncated?): {e}"),
                retry_after: None,
            });
        }
        Err(map_error(url, status, headers, body, &self.key_origin))
    }
}

/// The error an unsuccessful answer means.
pub(crate) fn map_error(url: &str, status: StatusCode, headers: &HeaderMap, body: &[u8], key_origin: &str) -> ApiError {
    let code = status.as_u16();
    match code {
        401 | 403 => ApiError::Batch(StageError::permanent(
            UNAUTHORIZED,
            format!(
                "POST {url}: the API refused the key (HTTP {code} {}): check {key_origin}",
                if code == 401 { "unauthorized" } else { "forbidden" }
            ),
        )),
        404 => ApiError::Batch(StageError::permanent(
            "http_404",
            format!("POST {url}: not found (HTTP 404: check base_url and model): {}", error_summary(body)),
        )),
        429 if error_code(body).as_deref() == Some("insufficient_quota") => ApiError::Batch(StageError::permanent(
            "insufficient_quota",
            format!("POST {url}: the account has no quota left (HTTP 429 insufficient_quota)"),
        )),
        429 => ApiError::Retryable {
            error_type: "http_429".into(),
            message: format!("POST {url}: rate limited (HTTP 429): {}", error_summary(body)),
            retry_after: crate::remote::http::retry_after(headers),
        },
        408 | 409 | 500..=599 => ApiError::Retryable {
            error_type: format!("http_{code}"),
            message: format!("POST {url}: HTTP {code}: {}", error_summary(body)),
            retry_after: crate::remote::http::retry_after(headers),
        },
        _ => ApiError::Request(StageError::permanent(
            format!("http_{code}"),
            format!("POST {url}: HTTP {code}: {}", error_summary(body)),
        )),
    }
}

/// Whether `error` is an [`ApiError::Request`] made a stage error: the API
/// refused that request as such (HTTP 4xx other than 401, 403, 404, 408,
/// 409 and 429), so a request with other inputs may pass.
pub fn is_refused_request(error: &StageError) -> bool {
    let code = error.error_type.strip_prefix("http_").and_then(|c| c.parse::<u16>().ok());
    !error.retryable && code.is_some_and(|c| (400..500).contains(&c) && c != 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: u16, body: &str) -> ApiError {
        map_error(
            "http://x/v1/chat/completions",
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            "OPENAI_API_KEY",
        )
    }

    #[test]
    fn answers_map_to_the_right_errors() {
        let leaked = r#"{"error":{"message":"Incorrect API key provided: sk-****cret.","code":"invalid_api_key"}}"#;
        match map(401, leaked) {
            ApiError::Batch(e) => {
                assert_eq!(e.error_type, UNAUTHORIZED);
                assert!(e.message.contains("OPENAI_API_KEY") && !e.message.contains("cret"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(map(403, "{}"), ApiError::Batch(_)));
        assert!(matches!(map(404, "{}"), ApiError::Batch(_)));
        assert!(matches!(map(429, r#"{"error":{"code":"insufficient_quota"}}"#), ApiError::Batch(_)));
        assert!(matches!(map(429, r#"{"error":{"code":"rate_limit_exceeded"}}"#), ApiError::Retryable { .. }));
        for code in [500, 502, 503, 504, 408] {
            assert!(matches!(map(code, ""), ApiError::Retryable { .. }), "{code}");
        }
        assert!(matches!(map(400, r#"{"error":{"message":"too long"}}"#), ApiError::Request(_)));
    }

    #[test]
    fn only_refused_requests_count_as_refused() {
        let refused = |code: u16| is_refused_request(&map(code, r#"{"error":{"message":"no"}}"#).into_stage_error());
        for code in [400, 413, 422] {
            assert!(refused(code), "{code}");
        }
        for code in [401, 403, 404, 408, 409, 429, 500, 503] {
            assert!(!refused(code), "{code}");
        }
        assert!(!is_refused_request(&StageError::permanent("embedding", "no data array")));
    }
}
