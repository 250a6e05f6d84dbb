//! sluice-connectors: the sources, stages and stores of sluice, each behind
//! the core traits, and the registry that builds them from configuration.
//!
//! Each connector family is a cargo feature (`sqlite`, `postgres`, `jsonl`,
//! `files`, `csv`, `intercom`, `crawl`, `watch`, `openai`, `minilm`, `s3`);
//! the default has all but `minilm` and `s3`. The core stages, the
//! `generate` source, the phases and the items sink are always built.

pub mod embedder;
pub mod incremental;
pub mod kind;
mod lacking;
pub mod phase;
pub mod pipeline_file;
pub mod registry;
pub mod remote;
pub mod sink;
pub mod source;
pub mod stage;
pub mod store;
pub mod util;

/// The old path of [`remote::http`], kept until every caller uses the new one.
#[cfg(feature = "remote")]
#[doc(hidden)]
pub use remote::http;
/// The old path of [`remote::openai`], kept until every caller uses the new one.
#[cfg(feature = "openai")]
#[doc(hidden)]
pub use remote::openai as openai_api;
/// The old path of [`util::time`], kept until every caller uses the new one.
#[doc(hidden)]
pub use util::time as dates;

pub use pipeline_file::{PipelineFile, build_pipeline, resolve_store};

/// A connector's configuration is not usable. The message names the key and
/// the value that were wrong and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
