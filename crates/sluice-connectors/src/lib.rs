//! sluice-connectors: the sources, stages and stores of sluice, each behind
//! the core traits, and the registry that builds them from configuration.

pub mod embedder;
pub mod kind;
pub mod phase;
pub mod pipeline_file;
pub mod registry;
pub mod remote;
pub mod sink;
pub mod source;
pub mod stage;
pub mod store;
pub mod util;

/// The old paths of [`remote::http`] and [`remote::openai`], kept until every caller uses the new ones.
#[doc(hidden)]
pub use remote::{http, openai as openai_api};
/// The old path of [`util::time`], kept until every caller uses the new one.
#[doc(hidden)]
pub use util::time as dates;

pub use pipeline_file::{PipelineFile, build_pipeline, resolve_store};

/// A connector's configuration is not usable. The message names the key and
/// the value that were wrong and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
