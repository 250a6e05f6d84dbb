-- Shared rate limits of distributed runs (issue 14, PostgreSQL only): one
-- token bucket per (run, service), so N workers together keep one rate to an
-- LLM API or an Intercom app instead of N times it. A worker takes tokens with
-- one UPDATE ... RETURNING that refills the bucket by the server's clock, and
-- a 429 (or a used-up window) sets `paused_until`, which every worker honours.
CREATE TABLE rate_buckets (
    run_id       bigint NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    -- e.g. 'openai http://host/v1 gpt-4o-mini', 'intercom https://api.intercom.io'
    service      text   NOT NULL,
    -- Refill in tokens (requests) per second; NULL: no rate of ours, only pauses.
    rate_per_s   double precision,
    -- The most tokens saved up (the burst).
    capacity     double precision NOT NULL DEFAULT 1,
    tokens       double precision NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    paused_until timestamptz,
    -- Diagnostics: tokens handed out and pauses set.
    taken        bigint NOT NULL DEFAULT 0,
    pauses       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, service)
);
