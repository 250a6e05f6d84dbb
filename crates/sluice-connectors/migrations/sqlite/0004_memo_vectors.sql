-- Vectors of stage results in binary: little-endian f32s, one blob per row,
-- which the row's JSON refers to as {"f32": [start, len]} (see
-- store/memo_vectors.rs). Rows written before keep their vectors in the JSON
-- until the code part of this migration (sqlite/schema.rs) moves them here.
ALTER TABLE stage_results ADD COLUMN vectors BLOB;
