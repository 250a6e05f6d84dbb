//! A directory of documents, walked recursively: one record per file.
//!
//! Files are ordered by relative path, and a page's cursor is the relative
//! path of its first file, so files added or removed before the cursor do not
//! shift what a resumed run reads next. With `watch = true` the source never
//! ends: see [`watch`] (the `watch` cargo feature).
//!
//! **Deleted files.** With `on_delete` set, a document of this source that the
//! store has and whose file is no longer there is reported deleted (marked
//! or removed, as `on_delete` says) after the listing: one per page, the
//! cursor naming it (`/gone/<id>`: no relative path starts with `/`), so a
//! resumed run neither skips nor repeats one. Unset (the default), deleted
//! files stay in the store as before: a store may hold documents of the same
//! source name from another directory. A document marked deleted is not
//! reported again (it is counted deleted once); with `"remove"` one an earlier
//! run marked is removed once its file is still gone.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
#[cfg(feature = "watch")]
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::store::{OnDelete, Store};
use sluice_core::{Context, Page, Source, SourceError, SourceItem};

use self::listing::{Entry, StoredFile, read_entry, walk};
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
    /// A stored document whose file is gone: `"mark"` (kept, left out of reads) or
    /// `"remove"`; unset (default): it stays in the store as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<OnDelete>,
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
            on_delete: None,
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
    /// The ids of this source's documents the store held before the run (with `on_delete`).
    stored: Mutex<Arc<BTreeSet<String>>>,
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
                on_delete: config.on_delete,
            })
        });
        Ok(Self {
            config,
            root,
            extensions,
            listing: Mutex::new(None),
            stored: Mutex::default(),
            #[cfg(feature = "watch")]
            watcher,
        })
    }

    /// The page of deleted files at `/gone/<from>`: the first stored id at or
    /// after `from` that the listing lacks; the next cursor names the one after it.
    fn gone_page(&self, listing: &[Entry], from: &str, action: OnDelete) -> Page {
        let stored = self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let listed = |id: &str| listing.binary_search_by(|e| e.rel.as_str().cmp(id)).is_ok();
        let mut missing = stored
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .filter(|id| !listed(id));
        let Some(id) = missing.next() else { return Page::default() };
        tracing::info!(id, action = ?action, "files: file gone");
        let next = missing.next().map(|next| format!("{GONE}{next}"));
        Page { items: vec![SourceItem::Deleted { id: id.clone(), action }], next, dropped: 0 }
    }

    /// The cursor after the last page of the listing: the first deleted file's, if any.
    fn after_listing(&self, listing: &[Entry]) -> Option<String> {
        self.config.on_delete?;
        let stored = self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let first = stored.iter().find(|id| listing.binary_search_by(|e| e.rel.as_str().cmp(id)).is_err());
        first.map(|id| format!("{GONE}{id}"))
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

    /// With `on_delete`, reads which documents of this source the store has
    /// (to tell deleted files); in watch mode also what each was stored as
    /// (so a file touched but unchanged is not yielded again after a restart).
    async fn prepare(&self, store: &dyn Store) -> Result<(), SourceError> {
        #[cfg(feature = "watch")]
        let watching = self.watcher.is_some();
        #[cfg(not(feature = "watch"))]
        let watching = false;
        if self.config.on_delete.is_none() && !watching {
            return Ok(());
        }
        let docs = stored_documents(store, &self.config.name).await?;
        // With "remove", documents an earlier run marked are removed too once their file is gone.
        let marked = match self.config.on_delete {
            Some(OnDelete::Remove) => store
                .deleted_ids(&self.config.name)
                .await
                .map_err(|e| SourceError::fatal(format!("files: reading the documents marked deleted: {e}")))?,
            _ => Vec::new(),
        };
        *self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(docs.iter().map(|d| d.0.clone()).chain(marked.iter().cloned()).collect());
        #[cfg(feature = "watch")]
        if let Some(watcher) = &self.watcher {
            watcher.remember(docs, marked).await;
        }
        Ok(())
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
        if let (Some(from), Some(action)) = (cursor.and_then(|c| c.strip_prefix(GONE)), self.config.on_delete) {
            return Ok(self.gone_page(&listing, from, action));
        }
        let start = match cursor {
            None => 0,
            Some(cursor) => listing.partition_point(|e| e.rel.as_str() < cursor),
        };
        let end = (start + self.config.page_size).min(listing.len());
        let next = match listing.get(end) {
            Some(e) => Some(e.rel.clone()),
            None => self.after_listing(&listing),
        };
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

/// The cursor prefix of the pages of deleted files.
const GONE: &str = "/gone/";

/// Stored documents read per query.
const SCAN_PAGE: usize = 1000;

/// Every stored (not deleted) document of `source`, in id order.
async fn stored_documents(store: &dyn Store, source: &str) -> Result<Vec<StoredFile>, SourceError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let docs = match store.scan_documents(source, after.as_deref(), SCAN_PAGE).await {
            Ok(docs) => docs,
            // A store that cannot be read back: nothing is known to be stored.
            Err(sluice_core::StoreError::Contract { .. }) => return Ok(out),
            Err(e) => return Err(SourceError::fatal(format!("files: reading the stored documents: {e}"))),
        };
        let full = docs.len() == SCAN_PAGE;
        after = docs.last().map(|d| d.id().to_string());
        out.extend(docs.into_iter().map(|d| (d.record.id, d.record.updated_at, d.content_hash)));
        if !full {
            return Ok(out);
        }
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
