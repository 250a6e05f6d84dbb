-- Unchanged work costs nothing (issue 18): the fingerprint of the pipeline
-- stages that made a document's row, written with it. A later run that
-- fetches the record with the same content hash, under a pipeline of the
-- same fingerprint, skips it before any stage and leaves the row as it is.
-- NULL: made by a pipeline that could not tell (or before this column), so
-- never skipped.
ALTER TABLE documents ADD COLUMN pipeline_fingerprint text;
