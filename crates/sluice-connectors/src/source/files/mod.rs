//! A directory of documents, walked recursively: one record per file.
//!
//! Files are ordered by relative path, and a page's cursor is the relative
//! path of its first file, so files added or removed before the cursor do not
//! shift what a resumed run reads next. With `watch = true` the source never
//! ends: see [`watch`] (the `watch` cargo feature).

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
#[cfg(feature = "watch")]
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Page, Source, SourceError};

use self::listing::{Entry, read_entry, walk};
#[cfg(feature = "watch")]
use self::watch::{WatchSettings, Watcher};
use crate::ConfigError;
use crate::util::validate::{check_not_empty, check_range};

mod listing;
#[cfg(feature = "watch")]
pub mod watch;

/// The single partition of a files source.
pub const PARTITION: &str = "main";

fn default_extensions() -> Vec<String> {
    ["txt", "md", "markdown", "html", "htm", "json"].into_iter().map(String::from).collect()
}

fn default_page_size() -> usize {
    100
}

fn default_name() -> String {
    "files".to_string()
}

fn default_debounce_ms() -> u64 {
    500
}

fn default_rescan_ms() -> u64 {
    5000
}

/// `[source] kind = "files"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory to walk (recursively; hidden files and directories are skipped).
    pub path: String,
    /// File extensions to read, case-insensitive, without the dot.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Files per page (1..=100000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Source name stored with every record.
    #[serde(default = "default_name")]
    pub name: String,
    /// Keep running after the first listing and pick up new and changed files as they land.
    #[serde(default)]
    pub watch: bool,
    /// Watch mode: a file is taken once it has not changed for this long (50..=60000 ms).
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Watch mode: the directory is listed again this often even without a change
    /// notification, in case one was missed (100..=3600000 ms).
    #[serde(default = "default_rescan_ms")]
    pub rescan_ms: u64,
}

impl FilesConfig {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            extensions: default_extensions(),
            page_size: default_page_size(),
            name: default_name(),
            watch: false,
            debounce_ms: default_debounce_ms(),
            rescan_ms: default_rescan_ms(),
        }
    }
}

/// Reads every matching file under a directory. A file that cannot be read
/// (`io`) or is not UTF-8 (`encoding`) becomes a `SourceItem::Invalid`.
#[derive(Debug)]
pub struct FilesSource {
    config: FilesConfig,
    root: PathBuf,
    /// Lowercase, without dots.
    extensions: Arc<Vec<String>>,
    /// The listing of the current walk of the partition; re-made on a fetch of the first page.
    listing: Mutex<Option<Arc<Vec<Entry>>>>,
    /// Set in watch mode: it serves every fetch then.
    #[cfg(feature = "watch")]
    watcher: Option<Watcher>,
}

impl FilesSource {
    pub fn new(config: FilesConfig) -> Result<Self, ConfigError> {
        check_not_empty("files.path", &config.path)?;
        check_range("files.page_size", config.page_size, 1, 100_000)?;
        check_not_empty("files.name", &config.name)?;
        if config.extensions.is_empty() {
            return Err(ConfigError("files.extensions = [] must list at least one extension".into()));
        }
        let mut extensions = Vec::new();
        for ext in &config.extensions {
            let clean = ext.trim().trim_start_matches('.').to_lowercase();
            if clean.is_empty() || clean.contains(['/', '\\']) {
                return Err(ConfigError(format!(
                    "files.extensions contains {ext:?}, which is not a file extension (e.g. \"md\")"
                )));
            }
            extensions.push(clean);
        }
        let root = PathBuf::from(&config.path);
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ConfigError(format!("files.path = {:?} is not a directory", config.path))),
            Err(e) => return Err(ConfigError(format!("files.path = {:?}: cannot open directory: {e}", config.path))),
        }
        check_range("files.debounce_ms", config.debounce_ms, 50, 60_000)?;
        check_range("files.rescan_ms", config.rescan_ms, 100, 3_600_000)?;
        let extensions = Arc::new(extensions);
        #[cfg(not(feature = "watch"))]
        if config.watch {
            return Err(crate::lacking::needs("files.watch = true", "watch"));
        }
        #[cfg(feature = "watch")]
        let watcher = config.watch.then(|| {
            Watcher::new(WatchSettings {
                source: config.name.clone(),
                root: root.clone(),
                extensions: extensions.clone(),
                page_size: config.page_size,
                debounce: Duration::from_millis(config.debounce_ms),
                rescan: Duration::from_millis(config.rescan_ms),
            })
        });
        Ok(Self {
            config,
            root,
            extensions,
            listing: Mutex::new(None),
            #[cfg(feature = "watch")]
            watcher,
        })
    }

    async fn list(&self, fresh: bool) -> Result<Arc<Vec<Entry>>, SourceError> {
        if !fresh && let Some(listing) = self.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        {
            return Ok(listing);
        }
        let (root, extensions) = (self.root.clone(), self.extensions.clone());
        let entries = tokio::task::spawn_blocking(move || walk(&root, &extensions))
            .await
            .map_err(|e| SourceError::fatal(format!("files: listing panicked: {e}")))?
            .map_err(|e| SourceError::fatal(format!("files: cannot list {:?}: {e}", self.config.path)))?;
        let entries = Arc::new(entries);
        *self.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entries.clone());
        Ok(entries)
    }
}

#[async_trait]
impl Source for FilesSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(vec![PARTITION.to_string()])
    }

    async fn fetch(&self, ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        if partition != PARTITION {
            return Err(SourceError::fatal(format!("files: unknown partition {partition:?}")));
        }
        #[cfg(feature = "watch")]
        if let Some(watcher) = &self.watcher {
            return watcher.fetch(ctx, cursor).await;
        }
        #[cfg(not(feature = "watch"))]
        let _ = ctx;
        let listing = self.list(cursor.is_none()).await?;
        let start = match cursor {
            None => 0,
            Some(cursor) => listing.partition_point(|e| e.rel.as_str() < cursor),
        };
        let end = (start + self.config.page_size).min(listing.len());
        let next = listing.get(end).map(|e| e.rel.clone());
        let (root, name) = (self.root.clone(), self.config.name.clone());
        let items = tokio::task::spawn_blocking(move || {
            listing[start..end].iter().map(|entry| read_entry(&name, &root, entry)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| SourceError::fatal(format!("files: reading a page panicked: {e}")))?;
        Ok(Page { items, next, dropped: 0 })
    }

    async fn estimated_total(&self) -> Option<u64> {
        #[cfg(feature = "watch")]
        if self.watcher.is_some() {
            return None; // a watch has no end to estimate
        }
        self.list(false).await.ok().map(|listing| listing.len() as u64)
    }

    #[cfg(feature = "watch")]
    fn batch_linger(&self) -> Option<Duration> {
        self.watcher.as_ref().map(|_| Watcher::LINGER)
    }
}

/// `kind = "files"`: the one source that can watch (`watch = true`, `sluice run --watch`).
impl crate::kind::SourceKind for FilesConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(FilesSource::new(self.clone())?))
    }

    fn watchable(&mut self) -> Option<&mut dyn crate::kind::Watchable> {
        Some(self)
    }
}

impl crate::kind::Watchable for FilesConfig {
    fn watching(&self) -> bool {
        self.watch
    }

    fn set_watching(&mut self, on: bool) {
        self.watch = on;
    }
}
