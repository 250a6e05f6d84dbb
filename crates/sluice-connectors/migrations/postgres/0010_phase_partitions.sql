-- Later phases of a distributed run split between workers (issue 14,
-- PostgreSQL only). A run is done in steps: step 0 is the source's
-- partitions; each per-document later phase (embeddings, facets) is a step
-- of K id ranges of the stored documents; the whole-corpus phases from the
-- first one on (themes, stories) are one last step of one task. A step's
-- rows are created in the transaction that marks the previous step's last
-- row done, under the run row's lock, so they are created once and a crash
-- can never fall between the two.

-- The run's plan of later steps, written at submission.
CREATE TABLE run_phases (
    run_id       bigint  NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    -- 1, 2, ... in phase order (the source's partitions are step 0).
    ordinal      integer NOT NULL,
    -- The phase a range step runs; for the whole-corpus step its first phase.
    phase        text    NOT NULL,
    -- Split into id ranges (a per-document phase) or one task.
    per_document boolean NOT NULL,
    -- The source whose stored documents are split.
    source       text    NOT NULL,
    -- Ranges to cut (a per-document step).
    ranges       integer NOT NULL DEFAULT 1,
    -- The sluice_core::Checkpoint every row of the step starts from.
    checkpoint   jsonb   NOT NULL,
    PRIMARY KEY (run_id, ordinal)
);

-- The step a row belongs to (0: a source partition).
ALTER TABLE run_partitions ADD COLUMN ordinal integer NOT NULL DEFAULT 0;
-- The later phase an id-range row runs; NULL for a source partition or the whole-corpus task.
ALTER TABLE run_partitions ADD COLUMN phase text;
-- The range's last stored document id, inclusive; NULL: open (the last range).
-- Its start (exclusive) is the cursor of the row's first checkpoint.
ALTER TABLE run_partitions ADD COLUMN range_last text;

-- A run submitted before this migration has its `__phases__` task already:
-- it is step 1, claimable once the source's partitions (step 0) are done.
UPDATE run_partitions SET ordinal = 1 WHERE later;
