//! The `items` sink: the seed's per-item files next to the store, written
//! by a [`Sink`] before each commit. Each committed document gets
//!
//! - `raw/item_{id}.json`: the record (source, id, text, fields, updated_at,
//!   and the hash of its content as fetched),
//! - `processed/item_{id}_processed.json`: the document after the stages
//!   (record, classification, whole-document embedding), without chunks,
//! - `chunks/item_{id}_chunks.json`: its chunks with their embeddings,
//!
//! where `{id}` is the record id made filename-safe (see [`item_name`]).
//!
//! The files of a batch are written before the batch is committed to the
//! store, so nothing is reported stored that is not on disk; a failed
//! write fails the commit and the checkpoint does not move. A resume or a
//! re-run rewrites the same files with the same content. Each file is
//! written whole (a temporary file renamed into place on a local disk, a
//! single PUT on object storage): a reader never sees half a file.
//!
//! The engine hands stores the documents as the stages left them: a stage
//! that rewrites the text (normalize) is seen in `raw/` too. `content_hash`
//! there is the hash of the record as the source fetched it.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sluice_core::store::{CommitBatch, RunId};
use sluice_core::{Chunk, Classification, Document, Record, Sink, StoreError};

use crate::ConfigError;
use crate::util::hash::fnv_hex;

/// Files written at once.
const WRITE_CONCURRENCY: usize = 16;
/// Bytes of the readable part of a file name (the id), before its hash.
const MAX_NAME_BYTES: usize = 80;

fn default_path() -> PathBuf {
    PathBuf::from("items")
}

/// `[sink] kind = "items"`: a local directory (`path`, default `items`) or
/// S3-compatible object storage (`url = "s3://bucket/prefix"`, with the `s3`
/// cargo feature; credentials and endpoint from the `AWS_*` variables).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsSinkConfig {
    #[serde(default = "default_path")]
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Default for ItemsSinkConfig {
    fn default() -> Self {
        Self { path: default_path(), url: None }
    }
}

/// The readable, filename-safe name of an item: `item_{id}_{hash}` where
/// `{id}` keeps ASCII letters, digits, `-` and `.` of the id (others become
/// `_`, at most 80 bytes) and `{hash}` (16 hex digits of the source and the
/// full id) keeps distinct ids apart, e.g. two URLs that differ only in
/// punctuation. The same record always gets the same name.
pub fn item_name(source: &str, id: &str) -> String {
    let mut readable: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .take(MAX_NAME_BYTES)
        .collect();
    // Runs of separators say nothing; `https://a/b` reads better as `https_a_b`.
    while readable.contains("__") {
        readable = readable.replace("__", "_");
    }
    let readable = readable.trim_matches(|c| c == '_' || c == '.');
    let hash = fnv_hex(format!("{source}\0{id}").as_bytes());
    if readable.is_empty() { format!("item_{hash}") } else { format!("item_{readable}_{hash}") }
}

/// `raw/item_{id}.json`: the record's source, id, text, fields, updated_at.
#[derive(Serialize)]
struct RawItem<'a> {
    #[serde(flatten)]
    record: &'a Record,
    content_hash: &'a str,
}

/// `processed/item_{id}_processed.json`: the document without its chunks.
#[derive(Serialize)]
struct ProcessedItem<'a> {
    #[serde(flatten)]
    record: &'a Record,
    content_hash: &'a str,
    classification: Option<&'a Classification>,
    embedding: Option<&'a [f32]>,
    chunk_count: usize,
}

/// `chunks/item_{id}_chunks.json`: the chunks with their embeddings.
#[derive(Serialize)]
struct ChunksItem<'a> {
    source: &'a str,
    id: &'a str,
    content_hash: &'a str,
    chunks: &'a [Chunk],
}

/// Where a sink writes, and how to name it in messages.
struct Target {
    objects: Arc<dyn ObjectStore>,
    location: String,
    /// Remote storage errors may pass (retried); a local disk's do not.
    remote: bool,
}

fn open_target(config: &ItemsSinkConfig) -> Result<Target, ConfigError> {
    match &config.url {
        Some(url) => open_url(url),
        None => {
            let path = &config.path;
            let shown = path.display();
            std::fs::create_dir_all(path)
                .map_err(|e| ConfigError(format!("sink.path = {:?} cannot be created: {e}", shown.to_string())))?;
            let local = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| ConfigError(format!("sink.path = {:?} cannot be used: {e}", shown.to_string())))?;
            Ok(Target { objects: Arc::new(local), location: shown.to_string(), remote: false })
        }
    }
}

#[cfg(feature = "s3")]
fn open_url(url: &str) -> Result<Target, ConfigError> {
    use object_store::aws::AmazonS3Builder;
    use object_store::prefix::PrefixStore;

    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        ConfigError(format!("sink.url = {url:?} is not an s3:// URL (allowed: s3://BUCKET or s3://BUCKET/PREFIX)"))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ConfigError(format!("sink.url = {url:?} names no bucket (allowed: s3://BUCKET/PREFIX)")));
    }
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| ConfigError(format!("sink.url = {url:?}: {e}")))?;
    let prefix = prefix.trim_matches('/');
    let objects: Arc<dyn ObjectStore> =
        if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
    Ok(Target { objects, location: url.to_string(), remote: true })
}

#[cfg(not(feature = "s3"))]
fn open_url(url: &str) -> Result<Target, ConfigError> {
    Err(ConfigError(format!(
        "sink.url = {url:?}: object storage is not in this build of sluice; build it with `--features s3` \
         (or write to a local directory with sink.path)"
    )))
}

/// Writes each committed document's files before the store commits it.
pub struct ItemsSink {
    target: Target,
}

impl ItemsSink {
    pub fn new(config: &ItemsSinkConfig) -> Result<Self, ConfigError> {
        Ok(Self { target: open_target(config)? })
    }

    /// A sink over any object store (tests, other backends).
    pub fn with_object_store(objects: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self { target: Target { objects, location: location.into(), remote: true } }
    }

    /// The three files of a document, as (path, JSON). Serialized from the
    /// document's own types, so vectors keep their f32 digits.
    fn files_of(doc: &Document) -> Result<[(ObjectPath, Vec<u8>); 3], serde_json::Error> {
        let name = item_name(doc.source(), doc.id());
        let record = &doc.record;
        let raw = RawItem { record, content_hash: &doc.content_hash };
        let processed = ProcessedItem {
            record,
            content_hash: &doc.content_hash,
            classification: doc.classification.as_ref(),
            embedding: doc.embedding.as_deref(),
            chunk_count: doc.chunks.len(),
        };
        let chunks =
            ChunksItem { source: &record.source, id: &record.id, content_hash: &doc.content_hash, chunks: &doc.chunks };
        Ok([
            (ObjectPath::from_iter(["raw", &format!("{name}.json")]), serde_json::to_vec(&raw)?),
            (ObjectPath::from_iter(["processed", &format!("{name}_processed.json")]), serde_json::to_vec(&processed)?),
            (ObjectPath::from_iter(["chunks", &format!("{name}_chunks.json")]), serde_json::to_vec(&chunks)?),
        ])
    }

    async fn write_items(&self, docs: &[Document]) -> Result<(), StoreError> {
        let mut files = Vec::with_capacity(docs.len() * 3);
        for doc in docs {
            let three = Self::files_of(doc).map_err(|e| StoreError::Contract {
                message: format!("items sink: document {} cannot be written as JSON: {e}", doc.id()),
            })?;
            files.extend(three);
        }
        futures::stream::iter(files)
            .map(|(path, bytes)| async move {
                self.target.objects.put(&path, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| {
                    let message = format!("items sink {}: cannot write {path}: {e}", self.target.location);
                    match e {
                        object_store::Error::Generic { .. } if self.target.remote => StoreError::Unavailable(message),
                        _ => StoreError::Database { message, source: Some(std::sync::Arc::new(e)) },
                    }
                })
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}

#[async_trait]
impl Sink for ItemsSink {
    fn name(&self) -> &str {
        "items"
    }

    /// Files first, then the store's commit: a crash between the two leaves
    /// files of a batch the store does not have yet, which the resume rewrites.
    async fn write(&self, _run: RunId, batch: &CommitBatch) -> Result<(), StoreError> {
        self.write_items(&batch.documents).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_filename_safe_deterministic_and_distinct() {
        let url = item_name("crawl", "https://docs.example.com/a/b?x=1&y=2#top");
        assert!(url.starts_with("item_https_docs.example.com_a_b_x_1_y_2_top_"), "{url}");
        assert!(url.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)), "{url}");
        assert_eq!(url, item_name("crawl", "https://docs.example.com/a/b?x=1&y=2#top"));
        assert_ne!(item_name("crawl", "a/b"), item_name("crawl", "a?b"), "same readable part, different ids");
        assert_ne!(item_name("crawl", "a"), item_name("files", "a"), "same id, different sources");
        assert_eq!(item_name("s", "../.."), format!("item_{}", fnv_hex(b"s\0../..")));
        assert!(item_name("s", &"x".repeat(1000)).len() < 120);
        assert!(item_name("s", "ünïcode/é").starts_with("item_n_code_"));
    }

    #[test]
    fn object_storage_urls_are_checked() {
        let error = |url: &str| open_url(url).err().map(|e| e.to_string()).unwrap_or_default();
        if cfg!(feature = "s3") {
            assert!(error("gs://bucket").contains("not an s3:// URL"));
            assert!(error("s3:///prefix").contains("names no bucket"));
            assert!(
                open_url("s3://bucket/some/prefix/")
                    .is_ok_and(|t| t.remote && t.location == "s3://bucket/some/prefix/")
            );
        } else {
            assert!(error("s3://bucket").contains("--features s3"));
        }
    }
}
