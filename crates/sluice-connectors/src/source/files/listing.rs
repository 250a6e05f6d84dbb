//! The files of a files source: the sorted walk of its directory, and the
//! record (or failure) each file becomes. Both the plain listing and the
//! watch use them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value};
use sluice_core::{Record, SourceItem};

use crate::util::html::decode_entities;
use crate::util::text::{MAX_RAW_BYTES, raw_of, truncate_utf8};
use crate::util::time::timestamp_from_value;

/// A stored document of a files source: id, `updated_at`, content hash.
pub(crate) type StoredFile = (String, Option<i64>, String);

/// One file of the listing.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Path relative to the root, with `/` separators: the record id and the cursor.
    pub rel: String,
    pub path: PathBuf,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn extension_of(name: &str) -> Option<String> {
    Path::new(name).extension().map(|e| e.to_string_lossy().to_lowercase())
}

/// Every matching file under `root`, sorted by relative path. Symlinks to
/// files are read; symlinks to directories are not followed (no cycles).
pub(crate) fn walk(root: &Path, extensions: &[String]) -> std::io::Result<Vec<Entry>> {
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

/// The failure entry of a file that cannot be read.
pub(crate) fn io_failure(rel: &str, e: &std::io::Error) -> SourceItem {
    SourceItem::Invalid {
        id: rel.to_string(),
        raw: String::new(),
        error_type: "io".into(),
        error: format!("cannot read {rel}: {e}"),
    }
}

pub(crate) fn read_entry(source: &str, root: &Path, entry: &Entry) -> SourceItem {
    match fs::read(&entry.path) {
        Ok(bytes) => entry_of_bytes(source, root, entry, bytes),
        Err(e) => io_failure(&entry.rel, &e),
    }
}

/// The record of a file whose content is `bytes`.
pub(crate) fn entry_of_bytes(source: &str, root: &Path, entry: &Entry, bytes: Vec<u8>) -> SourceItem {
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
}
