//! What flows through a pipeline: a `Record` as a source fetched it, and the
//! `Document` the stages build from it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One item as fetched from a source. `(source, id)` is its identity in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub source: String,
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// Seconds since the Unix epoch, when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl Record {
    pub fn new(source: impl Into<String>, id: impl Into<String>, text: impl Into<String>) -> Self {
        Self { source: source.into(), id: id.into(), text: text.into(), fields: Map::new(), updated_at: None }
    }

    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// SHA-256 over the content (text, fields, updated_at), hex encoded. Two
    /// fetches of unchanged content hash alike, so a stage's stored result can
    /// be reused instead of paying for the work again.
    pub fn content_hash(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        hasher.0.update(self.text.as_bytes());
        hasher.0.update([0u8]);
        // serde_json's Map is a BTreeMap here (no preserve_order), so key order is
        // canonical. Serialized straight into the hasher: no copy of the fields.
        if serde_json::to_writer(&mut hasher, &self.fields).is_err() {
            hasher.0.update(b"<unserializable>");
        }
        let mut hasher = hasher.0;
        hasher.update([0u8]);
        hasher.update(self.updated_at.unwrap_or_default().to_le_bytes());
        to_hex(&hasher.finalize())
    }

    /// A cheap estimate of the heap bytes this record holds, for byte-bounded batches.
    pub fn approx_bytes(&self) -> usize {
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + approx_value_bytes(v)).sum();
        self.source.len() + self.id.len() + self.text.len() + fields + 64
    }
}

/// Feeds serialized bytes to the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn approx_value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 24,
        Value::Array(items) => items.iter().map(approx_value_bytes).sum::<usize>() + 24,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + approx_value_bytes(v)).sum::<usize>() + 24,
        _ => 16,
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// The label a classifier gave a document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub category: String,
    pub confidence: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which classifier produced it (e.g. `rules`, or the LLM model name).
    pub classifier: String,
}

/// A piece of a document's text, with its embedding once the embed stage ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: u32,
    /// Byte offset of the chunk in the document's (normalized) text.
    pub offset: usize,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// A record on its way through the stages, with what they added to it. It is
/// what the store upserts, keyed by `(record.source, record.id)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub record: Record,
    /// Hash of the record as fetched, before any stage changed it.
    pub content_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
    /// Whole-document embedding, set by the embed stage when there are no chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// What later phases found about the document (facets, theme), by phase output name.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

impl Document {
    pub fn from_record(record: Record) -> Self {
        let content_hash = record.content_hash();
        Self {
            record,
            content_hash,
            classification: None,
            chunks: Vec::new(),
            embedding: None,
            annotations: Map::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn source(&self) -> &str {
        &self.record.source
    }

    pub fn approx_bytes(&self) -> usize {
        let chunks: usize =
            self.chunks.iter().map(|c| c.text.len() + c.embedding.as_ref().map_or(0, |e| e.len() * 4) + 48).sum();
        self.record.approx_bytes() + chunks + self.embedding.as_ref().map_or(0, |e| e.len() * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_changes_with_text_fields_and_time_only() {
        let a = Record::new("s", "1", "hello").with_field("title", "t");
        let same_content_other_id = Record::new("s", "2", "hello").with_field("title", "t");
        assert_eq!(a.content_hash(), same_content_other_id.content_hash());
        assert_ne!(a.content_hash(), Record::new("s", "1", "hello!").with_field("title", "t").content_hash());
        assert_ne!(a.content_hash(), Record::new("s", "1", "hello").with_field("title", "u").content_hash());
        let mut later = a.clone();
        later.updated_at = Some(5);
        assert_ne!(a.content_hash(), later.content_hash());
        assert_eq!(a.content_hash().len(), 64);
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = Record::new("jsonl", "a", "text").with_field("n", 3);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
