//! What the connectors that call remote HTTP APIs share.
//!
//! - [`endpoint`]: the settings of an OpenAI-compatible API
//!   ([`endpoint::OpenAiEndpoint`]), which the LLM classifier and the embed
//!   stage share. Always built: a pipeline file's keys read the same in every build.
//! - [`http`] (`remote` feature, on with `intercom`, `crawl` or `openai`):
//!   `Retry-After`, jitter, error-body summaries, base URL checks.
//! - [`openai`] (`openai` feature): a small client for OpenAI-compatible APIs.

pub mod endpoint;
#[cfg(feature = "remote")]
pub mod http;
#[cfg(feature = "openai")]
pub mod openai;
