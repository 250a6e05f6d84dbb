-- Tombstones: documents whose source item is gone (a crawled page now
-- 404/410, a deleted file) and that `on_delete = "mark"` keeps. The document
-- row stays as it was; reads (document counts, later phases, search) skip the
-- documents listed here. Upserting the document again (the page is back)
-- deletes its tombstone in the same transaction. `on_delete = "remove"`
-- deletes the document (and its chunks) instead, and leaves no row here.
-- A table of its own, so the documents table keeps its shape.
-- As migrations/sqlite/0008_deleted_documents.sql.
CREATE TABLE deleted_documents (
    source     text NOT NULL,
    id         text NOT NULL,
    run_id     bigint NOT NULL,
    deleted_at timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);
