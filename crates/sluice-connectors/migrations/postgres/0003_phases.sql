-- Later phases: what they find about a document (facets, theme) is kept with
-- it, apart from the record (an upsert of the record leaves it alone, an
-- update of it leaves write_count alone), and what belongs to no single
-- document (themes, stories) is kept per run, keyed (run_id, kind, key).
-- As migrations/sqlite/0003_phases.sql.
ALTER TABLE documents ADD COLUMN annotations jsonb NOT NULL DEFAULT '{}';

-- Later phases scan a source's documents in id order, page by page (keyset:
-- id > the last one seen). The order is byte order (COLLATE "C"), as in the
-- SQLite store, whatever the database's collation; the primary key's index
-- is in the database's collation, so the scan has an index of its own.
CREATE INDEX documents_scan ON documents (source, id COLLATE "C");

CREATE TABLE run_results (
    run_id    bigint NOT NULL,
    kind      text NOT NULL,
    key       text NOT NULL,
    value     jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, kind, key)
);
