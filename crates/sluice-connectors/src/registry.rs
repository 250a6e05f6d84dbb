//! The one place that knows every connector: the `kind = "…"` enums of the
//! pipeline file, each with one dispatch to its component's configuration.
//! What a component builds and what a run of it needs is said by its config
//! type, in its own file ([`SourceKind`], [`StageKind`]). Adding a source or
//! a stage means its file(s), its `pub mod` line and one line here.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{Mode, Source, StageSpec, Store};

use crate::ConfigError;
pub use crate::kind::{DateRanged, RunDefaults, SourceKind, StageKind, Watchable};
use crate::source::crawl::CrawlConfig;
use crate::source::files::FilesConfig;
use crate::source::generate::GenerateConfig;
use crate::source::intercom::{IntercomConfig, IntercomSource, QualityStage};
use crate::source::jsonl::JsonlConfig;
use crate::stage::chunk::ChunkConfig;
use crate::stage::classify::ClassifyConfig;
use crate::stage::embed::EmbedConfig;
use crate::stage::extract_html::ExtractHtmlConfig;
use crate::stage::filter::FilterConfig;
use crate::stage::normalize::NormalizeConfig;
use crate::store::InspectStore;
use crate::store::items_sink::{ItemsSink, ItemsSinkConfig};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;

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
    /// `[source]`: which source, by `kind`, and its settings.
    pub enum SourceConfig: SourceKind {
        Jsonl(JsonlConfig) = "jsonl",
        Files(FilesConfig) = "files",
        Generate(GenerateConfig) = "generate",
        Intercom(IntercomConfig) = "intercom",
        Crawl(CrawlConfig) = "crawl",
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
        /// A web page's main text, title and description.
        ExtractHtml(ExtractHtmlConfig) = "extract_html",
        Filter(FilterConfig) = "filter",
        /// `provider = "rules"` (default) or `provider = "llm"`.
        Classify(ClassifyConfig) = "classify",
        Chunk(ChunkConfig) = "chunk",
        Embed(EmbedConfig) = "embed",
    }
}

/// `[store]`: where documents and runs are kept. SQLite by default;
/// `kind = "postgres"` with `url = "postgres://..."` for PostgreSQL.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        /// Saved with a run's settings with its password hidden.
        #[serde(serialize_with = "serialize_redacted")]
        url: String,
    },
}

fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite { path: PathBuf::from("sluice.db") }
    }
}

impl StoreConfig {
    /// Reads a `DATABASE_URL`: `postgres://...` or `postgresql://...` for
    /// PostgreSQL; `sqlite:PATH`, `sqlite://PATH`, or a bare path for SQLite.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed now, so a malformed URL is refused at start (without its password).
            PostgresStore::connect_lazy(url).map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
            return Ok(StoreConfig::Postgres { url: url.to_string() });
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError(
                "DATABASE_URL is empty (allowed: sqlite:PATH, postgres://USER@HOST:PORT/DATABASE)".into(),
            ));
        }
        Ok(StoreConfig::Sqlite { path: PathBuf::from(path) })
    }
}

/// Hides a password in a connection URL for messages and logs: the one in
/// the user info (`user:***@host`) and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &base[..scheme + 3], &userinfo[..colon], &base[at..]),
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `[sink]`: where documents are written besides the store, by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// The seed's per-item files: `raw/`, `processed/`, `chunks/`.
    Items(ItemsSinkConfig),
}

/// The store with the sink in front of it: each batch's documents are
/// written to the sink, then committed to the store.
pub fn with_sink(store: Arc<dyn Store>, config: &SinkConfig) -> Result<Arc<dyn Store>, ConfigError> {
    Ok(match config {
        SinkConfig::Items(c) => Arc::new(ItemsSink::new(store, c)?),
    })
}

/// Builds the source `config` describes (for a streaming run).
pub fn build_source(config: &SourceConfig) -> Result<Arc<dyn Source>, ConfigError> {
    config.kind().build()
}

/// Builds the source for a run in `mode`: as [`build_source`], except that the
/// Intercom source leaves short conversations to [`source_stages`] in batch mode.
// Until the engine derives the batch-mode counters itself.
pub fn build_source_for(config: &SourceConfig, mode: Mode) -> Result<Arc<dyn Source>, ConfigError> {
    match config {
        SourceConfig::Intercom(c) if mode == Mode::Batch => Ok(Arc::new(IntercomSource::new(c.clone(), mode)?)),
        _ => build_source(config),
    }
}

/// Stages a source needs before the configured ones in `mode`: for Intercom
/// in batch mode, the quality filter the source applies at page level in
/// streaming mode (so both modes store the same conversations, with the
/// runbook's counter semantics).
pub fn source_stages(config: &SourceConfig, mode: Mode) -> Vec<StageSpec> {
    match config {
        SourceConfig::Intercom(c) if mode == Mode::Batch && c.min_chars > 0 => {
            vec![StageSpec::new(Arc::new(QualityStage::new(c.min_chars)))]
        }
        _ => Vec::new(),
    }
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
    Ok(StageSpec::new(entry.stage.kind().build()?).workers(entry.workers))
}

/// An opened store, kept with its concrete type where callers need more than the trait.
#[derive(Clone)]
pub enum OpenedStore {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl OpenedStore {
    pub fn as_store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Sqlite(s) => s.clone(),
            OpenedStore::Postgres(s) => s.clone(),
        }
    }

    /// The store with the read helpers every backend has (counts, documents, active run).
    pub fn as_inspect(&self) -> Arc<dyn InspectStore> {
        match self {
            OpenedStore::Sqlite(s) => s.clone(),
            OpenedStore::Postgres(s) => s.clone(),
        }
    }
}

/// Opens the store `config` names. A PostgreSQL store is only prepared here
/// (its URL parsed): it connects and sets its schema up on first use. Use
/// [`open_store_async`] to find a server that is down or a bad schema now.
pub fn open_store(config: &StoreConfig) -> Result<OpenedStore, ConfigError> {
    match config {
        StoreConfig::Sqlite { path } => {
            SqliteStore::open(path).map(|s| OpenedStore::Sqlite(Arc::new(s))).map_err(|e| ConfigError(e.to_string()))
        }
        StoreConfig::Postgres { url } => PostgresStore::connect_lazy(url)
            .map(|s| OpenedStore::Postgres(Arc::new(s)))
            .map_err(|e| ConfigError(e.to_string())),
    }
}

/// Opens the store `config` names, connecting and setting a PostgreSQL
/// store's schema up at once (and saying how it stores embeddings).
pub async fn open_store_async(config: &StoreConfig) -> Result<OpenedStore, ConfigError> {
    match config {
        StoreConfig::Sqlite { .. } => open_store(config),
        StoreConfig::Postgres { url } => PostgresStore::open(url)
            .await
            .map(|s| OpenedStore::Postgres(Arc::new(s)))
            .map_err(|e| ConfigError(e.to_string())),
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
        for url in ["postgres://u:secret@h/db", "postgresql://u:secret@h:5433/db?sslmode=disable"] {
            assert!(matches!(StoreConfig::from_url(url).unwrap(), StoreConfig::Postgres { url: u } if u == url));
        }
        let err = StoreConfig::from_url("postgres://u:secret@h:port/db").unwrap_err().to_string();
        assert!(!err.contains("secret") && err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn redact_hides_password_only() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=pw&x=1"),
            "postgres://u@h/db?sslmode=require&password=***&x=1"
        );
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
        let store = open_store(&config).unwrap().as_store();
        assert_eq!(store.describe(), "postgres:postgres://u:***@127.0.0.1:1/db");
        let err = store.list_runs(1).await.unwrap_err();
        assert!(matches!(err, sluice_core::StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
