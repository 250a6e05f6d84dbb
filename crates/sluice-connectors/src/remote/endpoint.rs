//! Where an OpenAI-compatible API is and how to call it: the settings the
//! LLM classifier and the embed stage share. Plain data, kept apart from the
//! client ([`super::openai`], `openai` feature) so that a build without it still
//! reads these keys and can say which feature `provider = "openai"` needs.

use serde::{Deserialize, Serialize};

use crate::util::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";
pub const BASE_URL_ENV: &str = "OPENAI_BASE_URL";

/// `error_type` of a [`sluice_core::StageError`] that means the key was refused: stages
/// fail the whole batch with it (and so the run), since every record would
/// meet the same answer.
pub const UNAUTHORIZED: &str = "unauthorized";

/// Where an OpenAI-compatible API is and how to call it: the settings the LLM
/// classifier and the embed stage share, flattened into their tables (so the
/// keys are `base_url`, `api_key_env`, … as before).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiEndpoint {
    /// API base URL including `/v1`; default `OPENAI_BASE_URL`, else `https://api.openai.com/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the API key. Default `OPENAI_API_KEY`.
    pub api_key_env: String,
    /// The key itself (prefer `api_key_env`). Never saved with a run, never printed.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Tries per call on 429/5xx/transport errors (1..=20). Default 5.
    pub max_attempts: u32,
    /// Time-out of one request, in seconds (1..=600). Default 60.
    pub timeout_secs: u64,
    /// Requests per minute to this model over the whole run: every worker of
    /// a distributed run together (a bucket in the store), or this process.
    /// Unset: no pacing of ours; a 429's wait still holds every caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<f64>,
}

impl Default for OpenAiEndpoint {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key_env: DEFAULT_KEY_ENV.to_string(),
            api_key: None,
            max_attempts: 5,
            timeout_secs: 60,
            requests_per_minute: None,
        }
    }
}
