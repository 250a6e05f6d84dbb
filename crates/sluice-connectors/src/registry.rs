//! The one place that knows every connector: it turns configuration into
//! sources, stages and stores. Adding a connector means a variant here and a
//! file of its own; nothing else changes.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{Source, Stage, StageSpec, Store};

use crate::ConfigError;
use crate::source::files::{FilesConfig, FilesSource};
use crate::source::generate::{GenerateConfig, GenerateSource};
use crate::source::jsonl::{JsonlConfig, JsonlSource};
use crate::stage::chunk::{ChunkConfig, ChunkStage};
use crate::stage::classify_rules::{RulesClassifier, RulesClassifyConfig};
use crate::stage::embed::{EmbedConfig, EmbedStage};
use crate::stage::filter::{FilterConfig, FilterStage};
use crate::stage::normalize::{NormalizeConfig, NormalizeStage};
use crate::store::sqlite::SqliteStore;

/// `[source]`: which source, by `kind`, and its settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Jsonl(JsonlConfig),
    Files(FilesConfig),
    Generate(GenerateConfig),
}

/// One `[[stages]]` entry: the stage by `kind`, its settings, and how many
/// batches it works on at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageEntry {
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(flatten)]
    pub stage: StageConfig,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageConfig {
    Normalize(NormalizeConfig),
    Filter(FilterConfig),
    Classify(RulesClassifyConfig),
    Chunk(ChunkConfig),
    Embed(EmbedConfig),
}

impl StageConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Normalize(_) => "normalize",
            StageConfig::Filter(_) => "filter",
            StageConfig::Classify(_) => "classify",
            StageConfig::Chunk(_) => "chunk",
            StageConfig::Embed(_) => "embed",
        }
    }
}

/// `[store]`: where documents and runs are kept. SQLite by default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite { path: PathBuf::from("sluice.db") }
    }
}

impl StoreConfig {
    /// Reads a `DATABASE_URL`: `sqlite:PATH`, `sqlite://PATH`, or a bare path.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(ConfigError(format!(
                "DATABASE_URL={} asks for PostgreSQL, which this build does not support yet (allowed: sqlite:PATH)",
                redact_url(url)
            )));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError("DATABASE_URL is empty (allowed: sqlite:PATH)".into()));
        }
        Ok(StoreConfig::Sqlite { path: PathBuf::from(path) })
    }
}

/// Hides a password in a connection URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub fn build_source(config: &SourceConfig) -> Result<Arc<dyn Source>, ConfigError> {
    Ok(match config.clone() {
        SourceConfig::Jsonl(c) => Arc::new(JsonlSource::new(c)?),
        SourceConfig::Files(c) => Arc::new(FilesSource::new(c)?),
        SourceConfig::Generate(c) => Arc::new(GenerateSource::new(c)?),
    })
}

pub fn build_stage(entry: &StageEntry) -> Result<StageSpec, ConfigError> {
    if entry.workers == 0 || entry.workers > 64 {
        return Err(ConfigError(format!(
            "stages.{}.workers = {} is out of range (allowed: 1-64)",
            entry.stage.kind(),
            entry.workers
        )));
    }
    let stage: Arc<dyn Stage> = match entry.stage.clone() {
        StageConfig::Normalize(c) => Arc::new(NormalizeStage::new(c)?),
        StageConfig::Filter(c) => Arc::new(FilterStage::new(c)?),
        StageConfig::Classify(c) => Arc::new(RulesClassifier::new(c)?),
        StageConfig::Chunk(c) => Arc::new(ChunkStage::new(c)?),
        StageConfig::Embed(c) => Arc::new(EmbedStage::new(c)?),
    };
    Ok(StageSpec::new(stage).workers(entry.workers))
}

/// An opened store, kept with its concrete type where callers need more than the trait.
#[derive(Clone)]
pub enum OpenedStore {
    Sqlite(Arc<SqliteStore>),
}

impl OpenedStore {
    pub fn as_store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Sqlite(s) => s.clone(),
        }
    }
}

pub fn open_store(config: &StoreConfig) -> Result<OpenedStore, ConfigError> {
    match config {
        StoreConfig::Sqlite { path } => {
            SqliteStore::open(path).map(|s| OpenedStore::Sqlite(Arc::new(s))).map_err(|e| ConfigError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_forms() {
        assert!(
            matches!(StoreConfig::from_url("sqlite://a/b.db").unwrap(), StoreConfig::Sqlite { path } if path == std::path::Path::new("a/b.db"))
        );
        assert!(
            matches!(StoreConfig::from_url("sqlite:x.db").unwrap(), StoreConfig::Sqlite { path } if path == std::path::Path::new("x.db"))
        );
        assert!(StoreConfig::from_url("").is_err());
        let err = StoreConfig::from_url("postgres://u:secret@h/db").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn redact_hides_password_only() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
