//! What the connectors that call remote HTTP APIs share.
//!
//! - [`http`]: `Retry-After`, jitter, error-body summaries, base URL checks.
//! - [`openai`]: a small client for OpenAI-compatible APIs, and the endpoint
//!   settings ([`openai::OpenAiEndpoint`]) the LLM classifier and the embed stage share.

pub mod http;
pub mod openai;
