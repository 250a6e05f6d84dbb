//! The one place that knows every connector: the `kind = "…"` enums of the
//! pipeline file, each with one dispatch to its component's configuration.
//! What a component builds and what a run of it needs is said by its config
//! type, in its own file ([`SourceKind`], [`StageKind`]). Adding a source or
//! a stage means its file(s), its `pub mod` line and one line here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{Sink, Source, StageSpec};

use crate::ConfigError;
pub use crate::kind::{DateRanged, RunDefaults, SourceKind, StageKind, Watchable};
// A kind whose feature is off is a stand-in (`crate::lacking`) that says which feature to turn on.
#[cfg(not(feature = "csv"))]
use crate::lacking::CsvConfig;
#[cfg(not(feature = "files"))]
use crate::lacking::FilesConfig;
#[cfg(not(feature = "intercom"))]
use crate::lacking::IntercomConfig;
#[cfg(not(feature = "jsonl"))]
use crate::lacking::JsonlConfig;
#[cfg(not(feature = "postgres"))]
use crate::lacking::PostgresConfig;
#[cfg(not(feature = "sqlite"))]
use crate::lacking::SqliteConfig;
#[cfg(not(feature = "test-faults"))]
use crate::lacking::TestPanicConfig;
#[cfg(not(feature = "crawl"))]
use crate::lacking::{CrawlConfig, ExtractHtmlConfig};
use crate::sink::items::{ItemsSink, ItemsSinkConfig};
#[cfg(feature = "crawl")]
use crate::source::crawl::CrawlConfig;
#[cfg(feature = "csv")]
use crate::source::csv::CsvConfig;
#[cfg(feature = "files")]
use crate::source::files::FilesConfig;
use crate::source::generate::GenerateConfig;
#[cfg(feature = "intercom")]
use crate::source::intercom::IntercomConfig;
#[cfg(feature = "jsonl")]
use crate::source::jsonl::JsonlConfig;
use crate::stage::chunk::ChunkConfig;
use crate::stage::classify::ClassifyConfig;
use crate::stage::embed::EmbedConfig;
#[cfg(feature = "crawl")]
use crate::stage::extract_html::ExtractHtmlConfig;
use crate::stage::filter::FilterConfig;
use crate::stage::normalize::NormalizeConfig;
#[cfg(feature = "test-faults")]
use crate::stage::test_panic::TestPanicConfig;
#[cfg(feature = "postgres")]
use crate::store::postgres::{PostgresConfig, PostgresStore};
#[cfg(feature = "sqlite")]
use crate::store::sqlite::SqliteConfig;
use crate::store::{InspectStore, StoreKind};
/// Moved to [`crate::util::secret`]; this path is kept for callers of the old one.
pub use crate::util::secret::redact_url;

/// Declares a `kind = "…"` enum, one variant per component written as
/// `Variant(Config) = "tag"`, with its one dispatch: `kind()`/`kind_mut()`
/// give the variant's config as the component trait, `tag()` its tag.
macro_rules! kinds {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $kind:ident {
            $( $(#[$variant_meta:meta])* $variant:ident($config:ty) = $tag:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $tag)] $variant($config), )*
        }

        impl $name {
            /// The component's configuration, as what it can do.
            pub fn kind(&self) -> &dyn $kind {
                match self {
                    $( Self::$variant(config) => config, )*
                }
            }

            /// The component's configuration, to change it (a range, a switch).
            pub fn kind_mut(&mut self) -> &mut dyn $kind {
                match self {
                    $( Self::$variant(config) => config, )*
                }
            }

            /// The `kind = "…"` tag, for messages.
            pub fn tag(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $tag, )*
                }
            }
        }
    };
}

kinds! {
    /// `[source]`: which source, by `kind`, and its settings. Each but
    /// `generate` needs the cargo feature of its name (else a stand-in says so).
    pub enum SourceConfig: SourceKind {
        Jsonl(JsonlConfig) = "jsonl",
        Files(FilesConfig) = "files",
        Generate(GenerateConfig) = "generate",
        Intercom(IntercomConfig) = "intercom",
        Crawl(CrawlConfig) = "crawl",
        Csv(CsvConfig) = "csv",
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

kinds! {
    /// A stage, by `kind`, and its settings.
    pub enum StageConfig: StageKind {
        Normalize(NormalizeConfig) = "normalize",
        /// A web page's main text, title and description (`crawl` feature).
        ExtractHtml(ExtractHtmlConfig) = "extract_html",
        Filter(FilterConfig) = "filter",
        /// `provider = "rules"` (default) or `provider = "llm"`.
        Classify(ClassifyConfig) = "classify",
        Chunk(ChunkConfig) = "chunk",
        Embed(EmbedConfig) = "embed",
        /// Panics on purpose, for tests (`test-faults` feature, never in a build for use).
        TestPanic(TestPanicConfig) = "test_panic",
    }
}

/// `[store]`: where documents and runs are kept. SQLite by default;
/// `kind = "postgres"` with `url = "postgres://..."` for PostgreSQL. Each
/// needs the cargo feature of its name (else a stand-in says so).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite(sqlite_at("sluice.db"))
    }
}

/// The SQLite store at `path` (without the `sqlite` feature, its stand-in, which says so when opened).
#[cfg(feature = "sqlite")]
fn sqlite_at(path: &str) -> SqliteConfig {
    SqliteConfig { path: std::path::PathBuf::from(path) }
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_at(path: &str) -> SqliteConfig {
    SqliteConfig(serde_json::Map::from_iter([("path".to_string(), path.into())]))
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
            return postgres_from_url(url);
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError(
                "DATABASE_URL is empty (allowed: sqlite:PATH, postgres://USER@HOST:PORT/DATABASE)".into(),
            ));
        }
        if cfg!(not(feature = "sqlite")) {
            return Err(crate::lacking::needs("DATABASE_URL=sqlite:...", "sqlite"));
        }
        Ok(StoreConfig::Sqlite(sqlite_at(path)))
    }
}

#[cfg(feature = "postgres")]
fn postgres_from_url(url: &str) -> Result<StoreConfig, ConfigError> {
    // Parsed now, so a malformed URL is refused at start (without its password).
    PostgresStore::connect_lazy(url).map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
    Ok(StoreConfig::Postgres(PostgresConfig { url: url.to_string() }))
}

#[cfg(not(feature = "postgres"))]
fn postgres_from_url(_url: &str) -> Result<StoreConfig, ConfigError> {
    Err(crate::lacking::needs("DATABASE_URL=postgres://...", "postgres"))
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

/// Builds the source `config` describes. The engine's mode is none of its
/// business: the Intercom source always drops short conversations at page
/// level, and the batch executor counts them as the batch runbook does.
pub fn build_source(config: &SourceConfig) -> Result<Arc<dyn Source>, ConfigError> {
    config.kind().build()
}

/// The stage an entry describes, with its workers.
pub fn build_stage(entry: &StageEntry) -> Result<StageSpec, ConfigError> {
    if entry.workers == 0 || entry.workers > 64 {
        return Err(ConfigError(format!(
            "stages.{}.workers = {} is out of range (allowed: 1-64)",
            entry.stage.tag(),
            entry.workers
        )));
    }
    let workers = match &entry.stage {
        // Its calls overlap across batches only with several batches at once (EmbedStage::MIN_WORKERS).
        StageConfig::Embed(_) => entry.workers.max(crate::stage::embed::EmbedStage::MIN_WORKERS),
        _ => entry.workers,
    };
    Ok(StageSpec::new(entry.stage.kind().build()?).workers(workers))
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

    /// A config naming kinds this build lacks still reads, and building says which feature to turn on.
    #[cfg(not(all(feature = "intercom", feature = "crawl", feature = "postgres")))]
    #[test]
    fn a_kind_this_build_lacks_names_its_feature() {
        let lacks = |result: Result<(), ConfigError>, what: &str, feature: &str| {
            let err = result.unwrap_err().to_string();
            let needs = format!("{what} needs sluice-connectors built with the `{feature}` feature");
            assert!(err.contains(&needs), "{err}");
        };
        #[cfg(not(feature = "intercom"))]
        {
            let config: SourceConfig = serde_json::from_str(r#"{"kind": "intercom", "days": 3}"#).unwrap();
            assert_eq!(config.tag(), "intercom");
            lacks(build_source(&config).map(drop), r#"[source] kind = "intercom""#, "intercom");
            // Saved with a run and read back, it is the same table.
            assert_eq!(serde_json::to_value(&config).unwrap(), serde_json::json!({"kind": "intercom", "days": 3}));
        }
        #[cfg(not(feature = "crawl"))]
        {
            let entry: StageEntry = serde_json::from_str(r#"{"kind": "extract_html"}"#).unwrap();
            lacks(build_stage(&entry).map(drop), r#"[[stages]] kind = "extract_html""#, "crawl");
        }
        #[cfg(not(feature = "postgres"))]
        {
            let config: StoreConfig =
                serde_json::from_str(r#"{"kind": "postgres", "url": "postgres://h/db"}"#).unwrap();
            lacks(open_store(&config).map(drop), r#"[store] kind = "postgres""#, "postgres");
            lacks(
                StoreConfig::from_url("postgres://u:secret@h/db").map(drop),
                "DATABASE_URL=postgres://...",
                "postgres",
            );
        }
    }

    #[cfg(all(feature = "sqlite", feature = "postgres"))]
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

    #[cfg(feature = "postgres")]
    #[test]
    fn a_saved_postgres_store_config_hides_its_password() {
        let config: StoreConfig =
            serde_json::from_str(r#"{"kind": "postgres", "url": "postgres://u:secret@h/db"}"#).unwrap();
        let saved = serde_json::to_string(&config).unwrap();
        assert!(!saved.contains("secret") && saved.contains("u:***@h/db"), "{saved}");
        assert!(serde_json::from_str::<StoreConfig>(r#"{"kind": "postgres", "url": "x", "path": "y"}"#).is_err());
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn a_lazily_opened_postgres_store_is_a_store_whose_errors_hide_the_password() {
        let config = StoreConfig::from_url("postgres://u:secret@127.0.0.1:1/db").unwrap();
        let store: Arc<dyn sluice_core::Store> = open_store(&config).unwrap();
        assert_eq!(store.describe(), "postgres:postgres://u:***@127.0.0.1:1/db");
        let err = store.list_runs(1).await.unwrap_err();
        assert!(matches!(err, sluice_core::StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
