//! A directory of documents, walked recursively: one record per file.
//!
//! Files are ordered by relative path, and a page's cursor is the relative
//! path of its first file, so files added or removed before the cursor do not
//! shift what a resumed run reads next. With `watch = true` the source never
//! ends: see [`super::files_watch`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

use super::files_watch::{WatchSettings, Watcher};
use super::{MAX_RAW_BYTES, check_not_empty, check_range, raw_of, timestamp_from_value, truncate_utf8};
use crate::ConfigError;

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

/// `[source] type = "files"`.
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

/// One file of the listing.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// Path relative to the root, with `/` separators: the record id and the cursor.
    pub rel: String,
    pub path: PathBuf,
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
        Ok(Self { config, root, extensions, listing: Mutex::new(None), watcher })
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

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn extension_of(name: &str) -> Option<String> {
    Path::new(name).extension().map(|e| e.to_string_lossy().to_lowercase())
}

/// Every matching file under `root`, sorted by relative path. Symlinks to
/// files are read; symlinks to directories are not followed (no cycles).
pub(super) fn walk(root: &Path, extensions: &[String]) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    let mut first = true;
    while let Some((dir, prefix)) = dirs.pop() {
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "files: cannot list a subdirectory, skipped");
                continue;
            }
        };
        first = false;
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "files: cannot read a directory entry, skipped");
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&name) {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else { continue };
            let is_dir = if file_type.is_symlink() {
                // Dangling links are listed (and reported as io failures); links to directories are skipped.
                if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                false
            } else {
                file_type.is_dir()
            };
            if is_dir {
                dirs.push((path, rel));
            } else if extension_of(&name).is_some_and(|ext| extensions.contains(&ext)) {
                entries.push(Entry { rel, path });
            }
        }
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(entries)
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
        if let Some(watcher) = &self.watcher {
            return watcher.fetch(ctx, cursor).await;
        }
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
        if self.watcher.is_some() {
            return None; // a watch has no end to estimate
        }
        self.list(false).await.ok().map(|listing| listing.len() as u64)
    }

    fn batch_linger(&self) -> Option<Duration> {
        self.watcher.as_ref().map(|_| Watcher::LINGER)
    }
}

/// The failure entry of a file that cannot be read.
pub(super) fn io_failure(rel: &str, e: &std::io::Error) -> SourceItem {
    SourceItem::Invalid {
        id: rel.to_string(),
        raw: String::new(),
        error_type: "io".into(),
        error: format!("cannot read {rel}: {e}"),
    }
}

fn read_entry(source: &str, root: &Path, entry: &Entry) -> SourceItem {
    match fs::read(&entry.path) {
        Ok(bytes) => entry_of_bytes(source, root, entry, bytes),
        Err(e) => io_failure(&entry.rel, &e),
    }
}

/// The record of a file whose content is `bytes`.
pub(super) fn entry_of_bytes(source: &str, root: &Path, entry: &Entry, bytes: Vec<u8>) -> SourceItem {
    let rel = &entry.rel;
    let modified =
        fs::metadata(&entry.path).and_then(|m| m.modified()).ok().map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        });
    let len = bytes.len();
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return SourceItem::Invalid {
                id: rel.clone(),
                raw: raw_of(e.as_bytes()),
                error_type: "encoding".into(),
                error: format!("{rel} is not valid UTF-8: {}", e.utf8_error()),
            };
        }
    };
    let extension = extension_of(rel).unwrap_or_default();
    let mut record = Record::new(source, rel.clone(), String::new());
    record.updated_at = modified;
    let mut text = text;
    match extension.as_str() {
        "json" => {
            if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&text)
                && let Some(Value::String(inner)) = map.remove("text")
            {
                if let Some(ts) = map.get("updated_at").and_then(timestamp_from_value) {
                    map.remove("updated_at");
                    record.updated_at = Some(ts);
                }
                record.fields = map;
                text = inner;
            }
        }
        "md" | "markdown" => {
            if let Some(title) = markdown_title(&text) {
                record.fields.insert("title".into(), title.into());
            }
        }
        "html" | "htm" => {
            if let Some(title) = html_title(&text) {
                record.fields.insert("title".into(), title.into());
            }
        }
        _ => {}
    }
    let fields: &mut Map<String, Value> = &mut record.fields;
    fields.insert("path".into(), root.join(rel).to_string_lossy().into_owned().into());
    fields.insert("extension".into(), extension.into());
    fields.insert("bytes".into(), (len as u64).into());
    record.text = text;
    SourceItem::Record(record)
}

/// The first `# ` heading of a markdown text, outside code fences.
fn markdown_title(text: &str) -> Option<String> {
    let mut in_fence = false;
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("```") || line.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(title) = line.strip_prefix("# ") {
            let title = title.trim().trim_end_matches('#').trim();
            if !title.is_empty() {
                return Some(truncate_utf8(title, 1024).to_string());
            }
        }
    }
    None
}

/// The `<title>` of an HTML text, entities decoded and whitespace collapsed.
fn html_title(text: &str) -> Option<String> {
    let head = truncate_utf8(text, MAX_RAW_BYTES);
    let lower = head.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let content_start = open + lower[open..].find('>')? + 1;
    let content_end = content_start + lower[content_start..].find("</title")?;
    let raw = &head[content_start..content_end];
    let title = decode_entities(raw).split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then(|| truncate_utf8(&title, 1024).to_string())
}

/// Decodes the few HTML entities a title commonly holds.
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Entities are short: look for the ';' close by only (linear time on any input).
        let end = rest.as_bytes().iter().take(12).position(|&b| b == b';');
        let decoded = end.and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "nbsp" => ' ',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        entity.strip_prefix('#').and_then(|dec| dec.parse::<u32>().ok())
                    };
                    char::from_u32(code?).filter(|c| *c != '\0')?
                }
            };
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_titles() {
        assert_eq!(markdown_title("intro\n# Hello world #\n## sub").as_deref(), Some("Hello world"));
        assert_eq!(markdown_title("```\n# not a title\n```\n# Real").as_deref(), Some("Real"));
        assert_eq!(markdown_title("## only sub\n#hashtag"), None);
    }

    #[test]
    fn html_titles() {
        assert_eq!(
            html_title("<html><HEAD><Title lang=en>\n Tom &amp; Jerry&#33; </title>").as_deref(),
            Some("Tom & Jerry!")
        );
        assert_eq!(html_title("<title></title>"), None);
        assert_eq!(html_title("<p>no title</p>"), None);
        assert_eq!(html_title("<title>never closed"), None);
    }

    #[test]
    fn entities_are_decoded_and_broken_ones_kept() {
        assert_eq!(decode_entities("a &lt;b&gt; &#x41; &unknown; & x"), "a <b> A &unknown; & x");
    }
}
