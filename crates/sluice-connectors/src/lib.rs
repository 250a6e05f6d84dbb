//! sluice-connectors: the sources, stages and stores of sluice, each behind
//! the core traits, and the registry that builds them from configuration.

pub mod dates;
pub mod embedder;
pub mod http;
pub mod kind;
pub mod openai_api;
pub mod phase;
pub mod pipeline_file;
pub mod registry;
pub mod source;
pub mod stage;
pub mod store;

pub use pipeline_file::{PipelineFile, build_pipeline, resolve_store};

/// A connector's configuration is not usable. The message names the key and
/// the value that were wrong and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
