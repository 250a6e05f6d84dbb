-- Later phases: what they find about a document (facets, theme) is kept with
-- it, apart from the record (an upsert of the record leaves it alone), and
-- what belongs to no single document (themes, stories) is kept per run.
ALTER TABLE documents ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}';

CREATE TABLE run_results (
    run_id    INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (run_id, kind, key)
);
