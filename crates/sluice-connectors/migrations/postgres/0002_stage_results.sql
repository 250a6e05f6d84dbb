-- Stage results remembered per record, so unchanged content is not paid for
-- again (an LLM label, an embedding). A result is reused only while both the
-- record's content hash and the stage's fingerprint (model, prompt, labels)
-- are the same as when it was made. As migrations/sqlite/0002_stage_results.sql.
CREATE TABLE stage_results (
    source       text NOT NULL,
    id           text NOT NULL,
    stage        text NOT NULL,
    fingerprint  text NOT NULL,
    content_hash text NOT NULL,
    value        jsonb NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id, stage)
);
