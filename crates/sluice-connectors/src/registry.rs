//! The one place that knows every connector: it turns configuration into
//! sources, stages and stores. Adding a connector means a variant here and a
//! file of its own; nothing else changes.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{Sink, Source, Stage, StageSpec, Store};

use crate::ConfigError;
use crate::sink::items::{ItemsSink, ItemsSinkConfig};
use crate::source::crawl::{CrawlConfig, CrawlSource};
use crate::source::files::{FilesConfig, FilesSource};
use crate::source::generate::{GenerateConfig, GenerateSource};
use crate::source::intercom::{IntercomConfig, IntercomSource};
use crate::source::jsonl::{JsonlConfig, JsonlSource};
use crate::stage::chunk::{ChunkConfig, ChunkStage};
use crate::stage::classify::ClassifyConfig;
use crate::stage::classify_llm::LlmClassifier;
use crate::stage::classify_rules::RulesClassifier;
use crate::stage::embed::{EmbedConfig, EmbedStage};
use crate::stage::extract_html::{ExtractHtmlConfig, ExtractHtmlStage};
use crate::stage::filter::{FilterConfig, FilterStage};
use crate::stage::normalize::{NormalizeConfig, NormalizeStage};
use crate::store::postgres::{PostgresConfig, PostgresStore};
use crate::store::sqlite::SqliteConfig;
use crate::store::{InspectStore, StoreKind};
/// Moved to [`crate::util::secret`]; this path is kept for callers of the old one.
pub use crate::util::secret::redact_url;

/// `[source]`: which source, by `kind`, and its settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Jsonl(JsonlConfig),
    Files(FilesConfig),
    Generate(GenerateConfig),
    Intercom(IntercomConfig),
    Crawl(CrawlConfig),
}

impl SourceConfig {
    /// The run's date range as `(date_from, date_to)`, `YYYY-MM-DD`, both
    /// included, for sources that have one (Intercom); `days` counts back
    /// from today (UTC). `None` for other sources or an invalid range (which
    /// building the source then refuses with the reason).
    pub fn date_range(&self) -> Option<(String, String)> {
        match self {
            SourceConfig::Intercom(c) => c.date_range().ok(),
            _ => None,
        }
    }

    /// Replaces a relative range (`days`) by the dates it means today, so the
    /// settings saved with a run name the same range whenever it is resumed.
    pub fn pin_date_range(&mut self) -> Result<(), ConfigError> {
        match self {
            SourceConfig::Intercom(c) => c.pin_dates(),
            _ => Ok(()),
        }
    }

    /// Sets an explicit range (`YYYY-MM-DD`, both included) on a source that
    /// has one, e.g. the range an HTTP request asked for; returns false for
    /// sources without a date range.
    pub fn set_date_range(&mut self, date_from: &str, date_to: &str) -> Result<bool, ConfigError> {
        match self {
            SourceConfig::Intercom(c) => c.set_dates(date_from, date_to).map(|()| true),
            _ => Ok(false),
        }
    }

    /// A record limit the source's settings give (`max_conversations`).
    pub fn max_records(&self) -> Option<u64> {
        match self {
            SourceConfig::Intercom(c) => c.max_conversations,
            _ => None,
        }
    }

    /// The word for this source's records in logs.
    pub fn record_noun(&self) -> &'static str {
        match self {
            SourceConfig::Intercom(_) => "conversations",
            SourceConfig::Crawl(_) => "pages",
            _ => "records",
        }
    }

    /// The phase a run of this source is in, when the pipeline file names none.
    pub fn default_phase(&self) -> Option<&'static str> {
        match self {
            SourceConfig::Intercom(_) => Some("classification"),
            _ => None,
        }
    }

    /// Whether the source keeps running for new data until stopped (`files` with `watch = true`).
    pub fn watches(&self) -> bool {
        matches!(self, SourceConfig::Files(c) if c.watch)
    }

    /// Turns watch mode on (`sluice run --watch`); only the files source watches.
    pub fn enable_watch(&mut self) -> Result<(), ConfigError> {
        match self {
            SourceConfig::Files(c) => {
                c.watch = true;
                Ok(())
            }
            other => Err(ConfigError(format!(
                "--watch needs a files source, but [source] kind = {:?} cannot be watched",
                other.kind()
            ))),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Jsonl(_) => "jsonl",
            SourceConfig::Files(_) => "files",
            SourceConfig::Generate(_) => "generate",
            SourceConfig::Intercom(_) => "intercom",
            SourceConfig::Crawl(_) => "crawl",
        }
    }
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
    /// A web page's main text, title and description.
    ExtractHtml(ExtractHtmlConfig),
    Filter(FilterConfig),
    /// `provider = "rules"` (default) or `provider = "llm"`.
    Classify(ClassifyConfig),
    Chunk(ChunkConfig),
    Embed(EmbedConfig),
}

impl StageConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Normalize(_) => "normalize",
            StageConfig::ExtractHtml(_) => "extract_html",
            StageConfig::Filter(_) => "filter",
            StageConfig::Classify(_) => "classify",
            StageConfig::Chunk(_) => "chunk",
            StageConfig::Embed(_) => "embed",
        }
    }
}

/// `[store]`: where documents and runs are kept. SQLite by default;
/// `kind = "postgres"` with `url = "postgres://..."` for PostgreSQL.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite(SqliteConfig { path: PathBuf::from("sluice.db") })
    }
}

impl StoreConfig {
    /// The configured store's own type, which opens it.
    pub fn kind(&self) -> &dyn StoreKind {
        match self {
            StoreConfig::Sqlite(c) => c,
            StoreConfig::Postgres(c) => c,
        }
    }

    /// Reads a `DATABASE_URL`: `postgres://...` or `postgresql://...` for
    /// PostgreSQL; `sqlite:PATH`, `sqlite://PATH`, or a bare path for SQLite.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed now, so a malformed URL is refused at start (without its password).
            PostgresStore::connect_lazy(url).map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
            return Ok(StoreConfig::Postgres(PostgresConfig { url: url.to_string() }));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError(
                "DATABASE_URL is empty (allowed: sqlite:PATH, postgres://USER@HOST:PORT/DATABASE)".into(),
            ));
        }
        Ok(StoreConfig::Sqlite(SqliteConfig { path: PathBuf::from(path) }))
    }
}

/// `[sink]`: where documents are written besides the store, by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// The seed's per-item files: `raw/`, `processed/`, `chunks/`.
    Items(ItemsSinkConfig),
}

impl SinkConfig {
    /// The sink, written before each commit of the store.
    pub fn build(&self) -> Result<Arc<dyn Sink>, ConfigError> {
        Ok(match self {
            SinkConfig::Items(c) => Arc::new(ItemsSink::new(c)?),
        })
    }
}

/// Builds the source. The engine's mode is none of its business: the
/// Intercom source always drops short conversations at page level, and the
/// batch executor counts them as the batch runbook does.
pub fn build_source(config: &SourceConfig) -> Result<Arc<dyn Source>, ConfigError> {
    Ok(match config.clone() {
        SourceConfig::Jsonl(c) => Arc::new(JsonlSource::new(c)?),
        SourceConfig::Files(c) => Arc::new(FilesSource::new(c)?),
        SourceConfig::Generate(c) => Arc::new(GenerateSource::new(c)?),
        SourceConfig::Intercom(c) => Arc::new(IntercomSource::new(c)?),
        SourceConfig::Crawl(c) => Arc::new(CrawlSource::new(c)?),
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
        StageConfig::ExtractHtml(c) => Arc::new(ExtractHtmlStage::new(c)?),
        StageConfig::Filter(c) => Arc::new(FilterStage::new(c)?),
        StageConfig::Classify(ClassifyConfig::Rules(c)) => Arc::new(RulesClassifier::new(c)?),
        StageConfig::Classify(ClassifyConfig::Llm(c)) => Arc::new(LlmClassifier::new(c)?),
        StageConfig::Chunk(c) => Arc::new(ChunkStage::new(c)?),
        StageConfig::Embed(c) => Arc::new(EmbedStage::new(c)?),
    };
    Ok(StageSpec::new(stage).workers(entry.workers))
}

/// Opens the store `config` names. A PostgreSQL store is only prepared here
/// (its URL parsed): it connects and sets its schema up on first use. Use
/// [`open_store_async`] to find a server that is down or a bad schema now.
pub fn open_store(config: &StoreConfig) -> Result<Arc<dyn InspectStore>, ConfigError> {
    config.kind().open()
}

/// Opens the store `config` names, connecting and setting a PostgreSQL
/// store's schema up at once (and saying how it stores embeddings).
pub async fn open_store_async(config: &StoreConfig) -> Result<Arc<dyn InspectStore>, ConfigError> {
    config.kind().check().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_forms() {
        assert!(
            matches!(StoreConfig::from_url("sqlite://a/b.db").unwrap(), StoreConfig::Sqlite(SqliteConfig { path }) if path == std::path::Path::new("a/b.db"))
        );
        assert!(
            matches!(StoreConfig::from_url("sqlite:x.db").unwrap(), StoreConfig::Sqlite(SqliteConfig { path }) if path == std::path::Path::new("x.db"))
        );
        assert!(StoreConfig::from_url("").is_err());
        for url in ["postgres://u:secret@h/db", "postgresql://u:secret@h:5433/db?sslmode=disable"] {
            assert!(
                matches!(StoreConfig::from_url(url).unwrap(), StoreConfig::Postgres(PostgresConfig { url: u }) if u == url)
            );
        }
        let err = StoreConfig::from_url("postgres://u:secret@h:port/db").unwrap_err().to_string();
        assert!(!err.contains("secret") && err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_saved_postgres_store_config_hides_its_password() {
        let config: StoreConfig =
            serde_json::from_str(r#"{"kind": "postgres", "url": "postgres://u:secret@h/db"}"#).unwrap();
        let saved = serde_json::to_string(&config).unwrap();
        assert!(!saved.contains("secret") && saved.contains("u:***@h/db"), "{saved}");
        assert!(serde_json::from_str::<StoreConfig>(r#"{"kind": "postgres", "url": "x", "path": "y"}"#).is_err());
    }

    #[tokio::test]
    async fn a_lazily_opened_postgres_store_is_a_store_whose_errors_hide_the_password() {
        let config = StoreConfig::from_url("postgres://u:secret@127.0.0.1:1/db").unwrap();
        let store: Arc<dyn Store> = open_store(&config).unwrap();
        assert_eq!(store.describe(), "postgres:postgres://u:***@127.0.0.1:1/db");
        let err = store.list_runs(1).await.unwrap_err();
        assert!(matches!(err, sluice_core::StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
