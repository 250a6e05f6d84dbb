//! The SQL texts built from pieces: timestamps read in the SQLite store's
//! format, and the `UNNEST` statements that write a batch of any size in one
//! statement with one cached plan (in a `real[]` and a pgvector variant).

/// A timestamptz column as RFC 3339 UTC with milliseconds, the format of the SQLite store.
macro_rules! ts {
    ($col:literal) => {
        concat!("to_char(", $col, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
}

macro_rules! run_columns {
    () => {
        concat!(
            "id, pipeline, status, phase, checkpoint, config, date_from, date_to, ",
            ts!("started_at"),
            ", ",
            ts!("updated_at"),
            ", ",
            ts!("finished_at"),
            ", error"
        )
    };
}

/// An embedding slice of the flat `real[]` bound as `$flat`: NULL when its length is NULL.
macro_rules! embedding_expr {
    ($flat:literal, $off:literal, $len:literal, $cast:literal) => {
        concat!(
            "CASE WHEN ",
            $len,
            " IS NULL THEN NULL ELSE (",
            $flat,
            "::real[])[",
            $off,
            " + 1 : ",
            $off,
            " + ",
            $len,
            "]",
            $cast,
            " END"
        )
    };
}

macro_rules! upsert_documents {
    ($cast:literal) => {
        concat!(
            "INSERT INTO documents AS d (source, id, text, fields, updated_at, content_hash, category, classification,
                                         embedding, run_id, write_count, stored_at, pipeline_fingerprint)
             SELECT u.source, u.id, u.text, u.fields::jsonb, u.updated_at, u.content_hash, u.category,
                    u.classification::jsonb, ",
            embedding_expr!("$11", "u.eoff", "u.elen", $cast),
            ", $12, u.writes, now(), $14
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                         $8::text[], $9::int4[], $10::int4[], $13::int8[])
                  AS u(source, id, text, fields, updated_at, content_hash, category, classification, eoff, elen,
                       writes)
             ON CONFLICT (source, id) DO UPDATE SET
                 text = EXCLUDED.text, fields = EXCLUDED.fields, updated_at = EXCLUDED.updated_at,
                 content_hash = EXCLUDED.content_hash, category = EXCLUDED.category,
                 classification = EXCLUDED.classification, embedding = EXCLUDED.embedding,
                 run_id = EXCLUDED.run_id, write_count = d.write_count + EXCLUDED.write_count,
                 stored_at = EXCLUDED.stored_at, pipeline_fingerprint = EXCLUDED.pipeline_fingerprint"
        )
    };
}

macro_rules! insert_chunks {
    ($cast:literal) => {
        concat!(
            "INSERT INTO chunks (source, doc_id, idx, byte_offset, text, embedding)
             SELECT u.source, u.doc_id, u.idx, u.byte_offset, u.text, ",
            embedding_expr!("$8", "u.eoff", "u.elen", $cast),
            " FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int4[], $7::int4[])
                  AS u(source, doc_id, idx, byte_offset, text, eoff, elen)"
        )
    };
}

/// What a later phase adds to stored documents: annotations replaced, the
/// embedding replaced only when one is given; the record, `write_count`,
/// `run_id` and `stored_at` stay as they are.
macro_rules! update_documents {
    ($cast:literal) => {
        concat!(
            "UPDATE documents AS d SET annotations = u.annotations::jsonb, embedding = COALESCE(",
            embedding_expr!("$6", "u.eoff", "u.elen", $cast),
            ", d.embedding)
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::int4[])
                  AS u(source, id, annotations, eoff, elen)
             WHERE d.source = u.source AND d.id = u.id"
        )
    };
}

/// A page of a source's documents (`$1`, at most `$2`) in byte order of their ids.
macro_rules! scan_documents {
    ($after:literal) => {
        concat!(
            "SELECT id, text, fields, updated_at, content_hash, classification, embedding::real[], annotations
             FROM documents d WHERE source = $1
               AND NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)",
            $after,
            " ORDER BY source, id COLLATE \"C\" LIMIT $2"
        )
    };
}

pub(super) const UPSERT_DOCUMENTS_REAL: &str = upsert_documents!("");
pub(super) const UPSERT_DOCUMENTS_VECTOR: &str = upsert_documents!("::vector");
pub(super) const INSERT_CHUNKS_REAL: &str = insert_chunks!("");
pub(super) const INSERT_CHUNKS_VECTOR: &str = insert_chunks!("::vector");
pub(super) const UPDATE_DOCUMENTS_REAL: &str = update_documents!("");
pub(super) const UPDATE_DOCUMENTS_VECTOR: &str = update_documents!("::vector");
pub(super) const SCAN_DOCUMENTS_FIRST: &str = scan_documents!("");
pub(super) const SCAN_DOCUMENTS_AFTER: &str = scan_documents!(" AND id COLLATE \"C\" > $3");

pub(super) const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM pipeline_runs WHERE id = $1");
pub(super) const LIST_RUNS: &str = concat!("SELECT ", run_columns!(), " FROM pipeline_runs ORDER BY id DESC LIMIT $1");
pub(super) const LAST_COMPLETED_RUN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM pipeline_runs WHERE pipeline = $1 AND status = 'completed' ORDER BY id DESC LIMIT 1"
);
pub(super) const CREATE_RUN: &str = concat!(
    "INSERT INTO pipeline_runs (pipeline, status, phase, config, date_from, date_to)
     VALUES ($1, 'running', $2, $3, $4, $5)
     RETURNING ",
    run_columns!()
);
pub(super) const GET_DOCUMENT: &str = concat!(
    "SELECT id, text, fields, updated_at, content_hash, classification, embedding::real[], annotations,
            category, run_id, write_count, ",
    ts!("stored_at"),
    ", (SELECT count(*) FROM chunks c WHERE c.source = d.source AND c.doc_id = d.id)
     FROM documents d WHERE source = $1 AND id = $2"
);
pub(super) const FAILURES: &str = concat!(
    "SELECT id, run_id, source, record_id, stage, error_type, error, retryable, retry_count, payload,
            has_record, ",
    ts!("created_at"),
    ", resolved_by FROM failures WHERE run_id = $1 ORDER BY id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_texts_are_well_formed() {
        assert!(UPSERT_DOCUMENTS_VECTOR.contains("u.elen]::vector END"), "{UPSERT_DOCUMENTS_VECTOR}");
        assert!(INSERT_CHUNKS_REAL.contains("($8::real[])[u.eoff + 1 : u.eoff + u.elen] END"), "{INSERT_CHUNKS_REAL}");
        assert!(run_columns!().contains("to_char(finished_at AT TIME ZONE 'UTC'"));
        assert!(
            UPDATE_DOCUMENTS_VECTOR.contains("COALESCE(CASE WHEN u.elen IS NULL THEN NULL ELSE ($6::real[])[u.eoff + 1 : u.eoff + u.elen]::vector END, d.embedding)"),
            "{UPDATE_DOCUMENTS_VECTOR}"
        );
        assert!(
            SCAN_DOCUMENTS_AFTER.contains("WHERE source = $1")
                && SCAN_DOCUMENTS_AFTER.contains("AND NOT EXISTS (SELECT 1 FROM deleted_documents t")
                && SCAN_DOCUMENTS_AFTER.contains("AND id COLLATE \"C\" > $3 ORDER BY"),
            "{SCAN_DOCUMENTS_AFTER}"
        );
    }
}
