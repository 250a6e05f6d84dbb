-- Vectors of stage results in binary: little-endian f32s, one bytea per row,
-- which the row's JSON refers to as {"f32": [start, len]} (see
-- store/memo_vectors.rs). Rows written before keep their vectors in the JSON
-- until the code part of this migration (postgres/schema.rs) moves them here.
-- As migrations/sqlite/0004_memo_vectors.sql.
ALTER TABLE stage_results ADD COLUMN vectors bytea;
