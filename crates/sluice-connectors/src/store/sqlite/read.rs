//! Reading stored documents back: counts, and a document's own columns
//! decoded into a [`Document`] (as `get_document` and later phases' scans
//! select them).

use rusqlite::{Connection, Row};
use sluice_core::{Document, Record, StoreError};

use crate::store::{decode_error, embedding_from_bytes};

pub(super) fn count(conn: &Connection, query: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn.prepare_cached(query)?.query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A document's own columns, read back in this order (`id, text, fields,
/// updated_at, content_hash, classification, embedding, annotations`) by
/// `get_document` and by later phases' scans.
pub(super) struct ScannedRow {
    id: String,
    text: String,
    fields: String,
    updated_at: Option<i64>,
    content_hash: String,
    classification: Option<String>,
    embedding: Option<Vec<u8>>,
    annotations: String,
}

impl ScannedRow {
    pub(super) fn read(row: &Row) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            text: row.get(1)?,
            fields: row.get(2)?,
            updated_at: row.get(3)?,
            content_hash: row.get(4)?,
            classification: row.get(5)?,
            embedding: row.get(6)?,
            annotations: row.get(7)?,
        })
    }

    pub(super) fn into_document(self, source: &str) -> Result<Document, StoreError> {
        let id = self.id;
        let bad = |e: String| decode_error(format!("document ({source}, {id}): {e}"));
        let record = Record {
            source: source.to_string(),
            id: id.clone(),
            text: self.text,
            fields: serde_json::from_str(&self.fields)
                .map_err(|e| bad(format!("its fields are not a JSON object: {e}")))?,
            updated_at: self.updated_at,
        };
        Ok(Document {
            record,
            content_hash: self.content_hash,
            classification: self
                .classification
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(|e| bad(format!("its classification cannot be read: {e}")))?,
            chunks: Vec::new(),
            embedding: self.embedding.map(|b| embedding_from_bytes(&b)).transpose().map_err(bad)?,
            annotations: serde_json::from_str(&self.annotations)
                .map_err(|e| bad(format!("its annotations are not a JSON object: {e}")))?,
        })
    }
}
