-- sluice SQLite store, schema version 1.
-- Timestamps are RFC 3339 UTC strings (e.g. 2025-01-31T12:00:00.123Z).
-- Applied by SqliteStore::open inside a transaction; recorded in schema_migrations.

-- Runs. `checkpoint` is the JSON of sluice_core::Checkpoint (phase, partitions,
-- counts, batches); `counts` is the JSON of its `counts`, written from the same
-- struct by the same statement, so the two never disagree. Both stay NULL until
-- the first batch commits ("no checkpoint": resuming starts over).
CREATE TABLE pipeline_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'stopping', 'stopped', 'failed', 'completed')),
    phase       TEXT NOT NULL,
    checkpoint  TEXT,
    config      TEXT NOT NULL,
    date_from   TEXT,
    date_to     TEXT,
    counts      TEXT,
    started_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT
);

CREATE INDEX pipeline_runs_status ON pipeline_runs (status);

-- Documents, upserted by (source, id). `write_count` counts the writes of the
-- row (1 on insert, +1 on every upsert of an existing row). `updated_at` is the
-- record's own time, in seconds since the Unix epoch, as the source gave it;
-- `stored_at` is when this row was last written. `embedding` is a whole-document
-- embedding as little-endian f32. `run_id` is the run that wrote it last (not
-- indexed on purpose: every index costs each upsert, and nothing hot looks
-- documents up by run).
CREATE TABLE documents (
    source         TEXT NOT NULL,
    id             TEXT NOT NULL,
    text           TEXT NOT NULL,
    fields         TEXT NOT NULL DEFAULT '{}',
    updated_at     INTEGER,
    content_hash   TEXT NOT NULL,
    category       TEXT,
    classification TEXT,
    embedding      BLOB,
    run_id         INTEGER NOT NULL,
    write_count    INTEGER NOT NULL DEFAULT 1,
    stored_at      TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

-- Chunks of a document's text (byte_offset into the normalized text), with
-- their embedding as little-endian f32. Upserting a document replaces its
-- chunks in the same transaction.
CREATE TABLE chunks (
    source      TEXT NOT NULL,
    doc_id      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    text        TEXT NOT NULL,
    embedding   BLOB,
    PRIMARY KEY (source, doc_id, idx)
);

-- Chunks never outlive their document, even when one is deleted by hand.
CREATE TRIGGER documents_delete_chunks AFTER DELETE ON documents
BEGIN
    DELETE FROM chunks WHERE source = OLD.source AND doc_id = OLD.id;
END;

-- The dead-letter queue: records that could not be processed. `resolved_by`
-- is the run whose retry stored the record.
CREATE TABLE failures (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL,
    source      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    stage       TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    error       TEXT NOT NULL,
    retryable   INTEGER NOT NULL CHECK (retryable IN (0, 1)),
    retry_count INTEGER NOT NULL DEFAULT 0,
    payload     TEXT NOT NULL,
    has_record  INTEGER NOT NULL CHECK (has_record IN (0, 1)),
    created_at  TEXT NOT NULL,
    resolved_by INTEGER
);

CREATE INDEX failures_run ON failures (run_id, source, record_id);
