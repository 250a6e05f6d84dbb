//! A commit encoded as column arrays for `UNNEST`: documents deduplicated
//! by `(source, id)` (PostgreSQL refuses to touch a row twice in one
//! `ON CONFLICT` statement), embeddings as one flat `real[]` with offsets,
//! and text PostgreSQL cannot hold (a NUL character) refused with its name,
//! or scrubbed in diagnostic text.

use std::collections::HashMap;

use serde::Serialize;
use sluice_core::Document;
use sluice_core::store::{CommitBatch, Failure};

use crate::store::memo_vectors::split_vectors;

fn json_text(value: &impl Serialize, what: &str) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("cannot encode {what} as JSON: {e}"))
}

/// Refuses text PostgreSQL cannot store (a NUL character), naming where it is.
fn no_nul(text: &str, what: impl FnOnce() -> String) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!("{} contains a NUL character, which PostgreSQL cannot store", what()));
    }
    Ok(())
}

/// Embeddings of a column, as one flat array with an offset and a length per row.
#[derive(Default)]
pub(super) struct Embeddings {
    pub(super) offset: Vec<Option<i32>>,
    pub(super) len: Vec<Option<i32>>,
    pub(super) flat: Vec<f32>,
}

impl Embeddings {
    fn push(&mut self, embedding: Option<&[f32]>, vector: bool) -> Result<(), String> {
        match embedding {
            Some(e) if !(vector && e.is_empty()) => {
                let offset = i32::try_from(self.flat.len()).map_err(|_| "too many embedding values in one batch")?;
                let len = i32::try_from(e.len()).map_err(|_| "an embedding is too long")?;
                self.offset.push(Some(offset));
                self.len.push(Some(len));
                self.flat.extend_from_slice(e);
            }
            _ => {
                self.offset.push(None);
                self.len.push(None);
            }
        }
        Ok(())
    }

    /// The dimension of the first embedding, if any.
    pub(super) fn first_dimension(&self) -> Option<usize> {
        self.len.iter().flatten().next().map(|&l| l as usize)
    }
}

#[derive(Default)]
pub(super) struct DocColumns {
    pub(super) source: Vec<String>,
    pub(super) id: Vec<String>,
    pub(super) text: Vec<String>,
    pub(super) fields: Vec<String>,
    pub(super) updated_at: Vec<Option<i64>>,
    pub(super) content_hash: Vec<String>,
    pub(super) category: Vec<Option<String>>,
    pub(super) classification: Vec<Option<String>>,
    pub(super) embedding: Embeddings,
    pub(super) writes: Vec<i64>,
}

#[derive(Default)]
pub(super) struct ChunkColumns {
    pub(super) source: Vec<String>,
    pub(super) doc_id: Vec<String>,
    pub(super) idx: Vec<i64>,
    pub(super) offset: Vec<i64>,
    pub(super) text: Vec<String>,
    pub(super) embedding: Embeddings,
}

#[derive(Default)]
pub(super) struct FailureColumns {
    pub(super) source: Vec<String>,
    pub(super) record_id: Vec<String>,
    pub(super) stage: Vec<String>,
    pub(super) error_type: Vec<String>,
    pub(super) error: Vec<String>,
    pub(super) retryable: Vec<bool>,
    pub(super) retry_count: Vec<i64>,
    pub(super) payload: Vec<String>,
    pub(super) has_record: Vec<bool>,
}

#[derive(Default)]
pub(super) struct MemoColumns {
    pub(super) source: Vec<String>,
    pub(super) id: Vec<String>,
    pub(super) stage: Vec<String>,
    pub(super) fingerprint: Vec<String>,
    pub(super) content_hash: Vec<String>,
    pub(super) value: Vec<String>,
    /// The value's vectors, as little-endian f32s (see `store::memo_vectors`).
    pub(super) vectors: Vec<Option<Vec<u8>>>,
}

#[derive(Default)]
pub(super) struct UpdateColumns {
    pub(super) source: Vec<String>,
    pub(super) id: Vec<String>,
    pub(super) annotations: Vec<String>,
    pub(super) embedding: Embeddings,
}

#[derive(Default)]
pub(super) struct ResultColumns {
    pub(super) kind: Vec<String>,
    pub(super) key: Vec<String>,
    pub(super) value: Vec<String>,
}

/// A commit's rows as column arrays for `UNNEST`.
#[derive(Default)]
pub(super) struct EncodedBatch {
    pub(super) docs: DocColumns,
    pub(super) chunks: ChunkColumns,
    pub(super) failures: FailureColumns,
    pub(super) memos: MemoColumns,
    pub(super) updates: UpdateColumns,
    pub(super) results: ResultColumns,
    pub(super) deletions: Vec<sluice_core::store::Deletion>,
    /// The pipeline fingerprint every document of the commit was made under.
    pub(super) fingerprint: Option<String>,
}

/// Replaces NUL characters (which PostgreSQL text cannot hold) in diagnostic text.
pub(super) fn scrub(text: &str) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text.to_owned() }
}

/// Encodes a commit: documents deduplicated by `(source, id)` (the last
/// occurrence wins, `writes` counts the occurrences), their chunks, the
/// failures, and the memos deduplicated by `(source, id, stage)`.
pub(super) fn encode_batch(batch: &CommitBatch, vector: bool) -> Result<EncodedBatch, String> {
    let mut out = EncodedBatch {
        deletions: batch.deletions.clone(),
        fingerprint: batch.fingerprint.clone(),
        ..EncodedBatch::default()
    };

    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.documents.len());
    let mut order: Vec<(&str, &str)> = Vec::with_capacity(batch.documents.len());
    let mut writes: HashMap<(&str, &str), i64> = HashMap::with_capacity(batch.documents.len());
    for (i, doc) in batch.documents.iter().enumerate() {
        let key = (doc.source(), doc.id());
        if last.insert(key, i).is_none() {
            order.push(key);
        }
        *writes.entry(key).or_insert(0) += 1;
    }
    for key in order {
        let (Some(&i), Some(&n)) = (last.get(&key), writes.get(&key)) else { continue };
        let doc = &batch.documents[i];
        encode_document(&mut out, doc, n, vector)?;
    }

    let f = &mut out.failures;
    for failure in &batch.failures {
        let Failure { source, record_id, stage, error_type, error, retryable, retry_count, payload, has_record } =
            failure;
        f.source.push(scrub(source));
        f.record_id.push(scrub(record_id));
        f.stage.push(scrub(stage));
        f.error_type.push(scrub(error_type));
        f.error.push(scrub(error));
        f.retryable.push(*retryable);
        f.retry_count.push(i64::from(*retry_count));
        f.payload.push(scrub(payload));
        f.has_record.push(*has_record);
    }

    let mut memo_last: HashMap<(&str, &str, &str), usize> = HashMap::with_capacity(batch.memos.len());
    let mut memo_order = Vec::with_capacity(batch.memos.len());
    for (i, memo) in batch.memos.iter().enumerate() {
        let key = (memo.source.as_str(), memo.id.as_str(), memo.stage.as_str());
        if memo_last.insert(key, i).is_none() {
            memo_order.push(key);
        }
    }
    let m = &mut out.memos;
    for key in memo_order {
        let Some(&i) = memo_last.get(&key) else { continue };
        let memo = &batch.memos[i];
        let (value, vectors) = split_vectors(&memo.value);
        let value = json_text(&value, "a stage result")?;
        let name = || format!("the {} result of document ({}, {})", memo.stage, memo.source, memo.id);
        no_nul(&value.replace("\\u0000", "\0"), name)?;
        for text in [&memo.source, &memo.id, &memo.stage, &memo.fingerprint, &memo.content_hash] {
            no_nul(text, name)?;
        }
        m.source.push(memo.source.clone());
        m.id.push(memo.id.clone());
        m.stage.push(memo.stage.clone());
        m.fingerprint.push(memo.fingerprint.clone());
        m.content_hash.push(memo.content_hash.clone());
        m.value.push(value);
        m.vectors.push(vectors);
    }

    // One UPDATE touches a row once (with one of its matches): keep the last update of a document.
    let mut update_last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.updates.len());
    let mut update_order = Vec::with_capacity(batch.updates.len());
    for (i, update) in batch.updates.iter().enumerate() {
        let key = (update.source.as_str(), update.id.as_str());
        if update_last.insert(key, i).is_none() {
            update_order.push(key);
        }
    }
    let u = &mut out.updates;
    for key in update_order {
        let Some(&i) = update_last.get(&key) else { continue };
        let update = &batch.updates[i];
        let name = || format!("the update of document ({}, {})", update.source, update.id);
        no_nul(&update.source, name)?;
        no_nul(&update.id, name)?;
        let annotations = json_text(&update.annotations, "document annotations")?;
        if annotations.contains("\\u0000") {
            return Err(format!(
                "{} has a NUL character in its annotations, which PostgreSQL jsonb cannot store",
                name()
            ));
        }
        u.source.push(update.source.clone());
        u.id.push(update.id.clone());
        u.annotations.push(annotations);
        u.embedding.push(update.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    }

    // ON CONFLICT cannot touch a row twice in one statement: keep the last result of a key.
    let mut result_last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.results.len());
    let mut result_order = Vec::with_capacity(batch.results.len());
    for (i, result) in batch.results.iter().enumerate() {
        let key = (result.kind.as_str(), result.key.as_str());
        if result_last.insert(key, i).is_none() {
            result_order.push(key);
        }
    }
    let r = &mut out.results;
    for key in result_order {
        let Some(&i) = result_last.get(&key) else { continue };
        let result = &batch.results[i];
        let name = || format!("the {} result {}", result.kind, result.key);
        no_nul(&result.kind, name)?;
        no_nul(&result.key, name)?;
        let value = json_text(&result.value, "a phase result")?;
        if value.contains("\\u0000") {
            return Err(format!("{} has a NUL character, which PostgreSQL jsonb cannot store", name()));
        }
        r.kind.push(result.kind.clone());
        r.key.push(result.key.clone());
        r.value.push(value);
    }
    Ok(out)
}

fn encode_document(out: &mut EncodedBatch, doc: &Document, writes: i64, vector: bool) -> Result<(), String> {
    let record = &doc.record;
    let name = || format!("document ({}, {})", record.source, record.id);
    let fields = json_text(&record.fields, "document fields")?;
    let classification = doc.classification.as_ref().map(|c| json_text(c, "a classification")).transpose()?;
    for text in [&record.source, &record.id, &record.text, &doc.content_hash] {
        no_nul(text, name)?;
    }
    // JSON spells a NUL "\u0000", which jsonb refuses.
    for json in std::iter::once(&fields).chain(classification.as_ref()) {
        if json.contains("\\u0000") {
            return Err(format!("{} has a NUL character in its fields, which PostgreSQL jsonb cannot store", name()));
        }
    }
    if let Some(category) = doc.classification.as_ref().map(|c| &c.category) {
        no_nul(category, name)?;
    }
    let d = &mut out.docs;
    d.source.push(record.source.clone());
    d.id.push(record.id.clone());
    d.text.push(record.text.clone());
    d.fields.push(fields);
    d.updated_at.push(record.updated_at);
    d.content_hash.push(doc.content_hash.clone());
    d.category.push(doc.classification.as_ref().map(|c| c.category.clone()));
    d.classification.push(classification);
    d.embedding.push(doc.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    d.writes.push(writes);

    let c = &mut out.chunks;
    for chunk in &doc.chunks {
        no_nul(&chunk.text, || format!("chunk {} of {}", chunk.index, name()))?;
        c.source.push(record.source.clone());
        c.doc_id.push(record.id.clone());
        c.idx.push(i64::from(chunk.index));
        c.offset.push(
            i64::try_from(chunk.offset)
                .map_err(|_| format!("chunk {} of {}: offset is too large", chunk.index, name()))?,
        );
        c.text.push(chunk.text.clone());
        c.embedding.push(chunk.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Record;
    use sluice_core::store::{DocumentUpdate, MemoEntry, PhaseResult};

    fn doc(id: &str, text: &str) -> Document {
        Document::from_record(Record::new("s", id, text))
    }

    #[test]
    fn repeated_documents_are_written_once_with_their_last_version_and_counted() {
        let mut second = doc("a", "second");
        second.embedding = Some(vec![1.0, 2.0]);
        let batch = CommitBatch {
            documents: vec![doc("a", "first"), doc("b", "b"), second, doc("a", "third")],
            ..CommitBatch::default()
        };
        let rows = encode_batch(&batch, false).unwrap();
        assert_eq!(rows.docs.id, ["a", "b"]);
        assert_eq!(rows.docs.text, ["third", "b"]);
        assert_eq!(rows.docs.writes, [3, 1]);
        assert!(rows.docs.embedding.flat.is_empty(), "the last version has no embedding");
    }

    #[test]
    fn embeddings_are_one_flat_array_with_offsets() {
        let mut a = doc("a", "a");
        a.embedding = Some(vec![1.0, 2.0, 3.0]);
        let mut c = doc("c", "c");
        c.embedding = Some(vec![]);
        let mut d = doc("d", "d");
        d.embedding = Some(vec![4.0, 5.0, 6.0]);
        let batch = CommitBatch { documents: vec![a, doc("b", "b"), c, d], ..CommitBatch::default() };
        let rows = encode_batch(&batch, false).unwrap();
        let e = &rows.docs.embedding;
        assert_eq!(e.flat, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(e.offset, [Some(0), None, Some(3), Some(3)]);
        assert_eq!(e.len, [Some(3), None, Some(0), Some(3)]);
        assert_eq!(e.first_dimension(), Some(3));
        let rows = encode_batch(&batch, true).unwrap();
        assert_eq!(rows.docs.embedding.len, [Some(3), None, None, Some(3)], "no empty vector in vector mode");
    }

    #[test]
    fn nul_characters_are_refused_in_documents_and_scrubbed_in_failures() {
        let batch = CommitBatch { documents: vec![doc("a", "nul\0here")], ..CommitBatch::default() };
        let err = encode_batch(&batch, false).err().unwrap();
        assert!(err.contains("document (s, a)") && err.contains("NUL"), "{err}");
        let bad_fields = Document::from_record(Record::new("s", "b", "ok").with_field("k", "x\0y"));
        let batch = CommitBatch { documents: vec![bad_fields], ..CommitBatch::default() };
        assert!(encode_batch(&batch, false).err().unwrap().contains("jsonb"));
        let failure = Failure {
            source: "s".into(),
            record_id: "r".into(),
            stage: "source".into(),
            error_type: "parse".into(),
            error: "bad".into(),
            retryable: false,
            retry_count: 0,
            payload: "raw\0line".into(),
            has_record: false,
        };
        let batch = CommitBatch { failures: vec![failure], ..CommitBatch::default() };
        assert_eq!(encode_batch(&batch, false).unwrap().failures.payload, ["raw\u{FFFD}line"]);
    }

    #[test]
    fn repeated_memos_keep_the_last() {
        let memo = |value: i64| MemoEntry {
            source: "s".into(),
            id: "a".into(),
            stage: "classify".into(),
            fingerprint: "f".into(),
            content_hash: "h".into(),
            value: serde_json::json!(value),
        };
        let batch = CommitBatch { memos: vec![memo(1), memo(2)], ..CommitBatch::default() };
        assert_eq!(encode_batch(&batch, false).unwrap().memos.value, ["2"]);
    }

    #[test]
    fn repeated_updates_and_results_keep_the_last() {
        let update = |id: &str, embedding: Option<Vec<f32>>, n: i64| DocumentUpdate {
            source: "s".into(),
            id: id.into(),
            embedding,
            annotations: serde_json::json!({ "n": n }).as_object().cloned().unwrap(),
        };
        let result = |key: &str, value: i64| PhaseResult { kind: "theme".into(), key: key.into(), value: value.into() };
        let batch = CommitBatch {
            updates: vec![update("a", Some(vec![1.0, 2.0]), 1), update("b", None, 2), update("a", Some(vec![3.0]), 3)],
            results: vec![result("t1", 1), result("t0", 2), result("t1", 3)],
            ..CommitBatch::default()
        };
        let rows = encode_batch(&batch, true).unwrap();
        let u = &rows.updates;
        assert_eq!(u.id, ["a", "b"]);
        assert_eq!(u.annotations, [r#"{"n":3}"#, r#"{"n":2}"#]);
        assert_eq!(
            (u.embedding.flat.as_slice(), u.embedding.len.as_slice()),
            ([3.0].as_slice(), [Some(1), None].as_slice())
        );
        assert_eq!(rows.results.key, ["t1", "t0"]);
        assert_eq!(rows.results.value, ["3", "2"]);
        let nul = CommitBatch {
            results: vec![PhaseResult { value: "a\0b".into(), ..result("t", 0) }],
            ..CommitBatch::default()
        };
        assert!(encode_batch(&nul, false).err().unwrap().contains("the theme result t"));
    }
}
