-- Stage results remembered per record, so unchanged content is not paid for
-- again (an LLM label, an embedding). A result is reused only while both the
-- record's content hash and the stage's fingerprint (model, prompt, labels)
-- are the same as when it was made.
CREATE TABLE stage_results (
    source       TEXT NOT NULL,
    id           TEXT NOT NULL,
    stage        TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    value        TEXT NOT NULL,
    stored_at    TEXT NOT NULL,
    PRIMARY KEY (source, id, stage)
);
