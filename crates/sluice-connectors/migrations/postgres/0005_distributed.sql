-- Distributed runs (issue 14, PostgreSQL only): one run shared by any number
-- of `sluice worker` processes. The run's work is cut into partitions (the
-- source's own, plus one task for the later phases); a worker leases one,
-- runs the engine over it, and every batch commit of it is fenced:
--   UPDATE run_partitions SET commit_seq = commit_seq + 1, checkpoint = ...
--   WHERE run_id = ... AND name = ... AND epoch = <the epoch of my claim>
-- is the first statement of the commit transaction, and zero rows rolls the
-- whole transaction back. A claim bumps `epoch`, so a worker whose lease
-- moved (killed, paused, cut off) can never commit again. Leases are server
-- time (`now()`), so clock skew between workers does not matter.

-- A run made by `sluice run --distributed`: no single process holds it, so
-- the run slot's "left running by a dead process" sweep leaves it alone.
ALTER TABLE pipeline_runs ADD COLUMN distributed boolean NOT NULL DEFAULT false;

CREATE TABLE run_partitions (
    run_id      bigint  NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    -- Source::partitions() name, or '__phases__' (the later phases, one leased task).
    name        text    NOT NULL,
    -- Claimable only once every other partition of the run is done.
    later       boolean NOT NULL DEFAULT false,
    -- The partition's own sluice_core::Checkpoint (position, counts, cost).
    checkpoint  jsonb   NOT NULL,
    -- Worker id (host:pid:nonce) of the current or last lease; diagnostics only.
    owner       text,
    lease_until timestamptz,
    -- Fencing token: +1 at every claim.
    epoch       bigint  NOT NULL DEFAULT 0,
    -- Commits of this partition so far; +1 by every fenced commit.
    commit_seq  bigint  NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);

CREATE INDEX run_partitions_open ON run_partitions (run_id) WHERE NOT done;

-- One row per fenced commit, written inside it: the audit trail that each
-- partition's commits are 1, 2, 3... with non-decreasing epochs.
CREATE TABLE partition_commits (
    run_id       bigint NOT NULL,
    name         text   NOT NULL,
    seq          bigint NOT NULL,
    epoch        bigint NOT NULL,
    owner        text,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name, seq)
);

-- The workers that ever joined, with their heartbeat.
CREATE TABLE workers (
    id              text   PRIMARY KEY,
    host            text   NOT NULL,
    pid             bigint NOT NULL,
    -- The lease it takes; it counts as alive while it heartbeat within one lease.
    lease_secs      double precision NOT NULL DEFAULT 30,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    -- Commits of this worker the fence refused (its lease had moved).
    refused_commits bigint NOT NULL DEFAULT 0,
    -- Set when the worker left cleanly.
    stopped_at      timestamptz
);
