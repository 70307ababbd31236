-- 002_request_logs_partitioned: request_logs becomes a table partitioned by
-- RANGE (created_at), for EZ_LOG_PARTITIONING (docs/log-pipeline.md,
-- "Partitions and retention").
--
-- The existing table is not copied: it is renamed and becomes the DEFAULT
-- partition, so this migration costs one index build (the new primary key)
-- whatever the table holds, and existing rows keep their ids. With
-- EZ_LOG_PARTITIONING=off nothing else ever happens: every row lives in
-- request_logs_default. With month or day, the background's "log_partitions"
-- job attaches range partitions ahead of time (moving any rows of their range
-- out of the default first), and the "log_retention" job drops partitions
-- that are entirely older than the retention cutoff.
--
-- A primary key of a partitioned table must contain the partition key, hence
-- (id, created_at). id still comes from the one sequence, so it stays unique
-- in practice and the cursor pagination (ORDER BY id DESC, id < before_id)
-- keeps working: each partition's primary-key index serves "id < X ORDER BY
-- id DESC" and a Merge Append combines them.

ALTER TABLE request_logs RENAME TO request_logs_default;
-- The old primary key (id) would be a second unique index on every insert.
ALTER TABLE request_logs_default DROP CONSTRAINT request_logs_pkey;
-- Free the names for the partitioned indexes; ATTACH below adopts these
-- indexes (same definitions) instead of building new ones.
ALTER INDEX request_logs_created_at_idx RENAME TO request_logs_default_created_at_idx;
ALTER INDEX request_logs_master_id_created_at_idx RENAME TO request_logs_default_master_id_created_at_idx;
ALTER INDEX request_logs_key_id_created_at_idx RENAME TO request_logs_default_key_id_created_at_idx;
ALTER INDEX request_logs_model_created_at_idx RENAME TO request_logs_default_model_created_at_idx;
ALTER INDEX request_logs_request_id_idx RENAME TO request_logs_default_request_id_idx;

-- Same columns, same order, same defaults as 001 (ATTACH requires the same
-- columns and NOT NULL constraints).
CREATE TABLE request_logs (
    id                bigint NOT NULL DEFAULT nextval('request_logs_id_seq'),
    request_id        text NOT NULL,
    created_at        timestamptz NOT NULL,
    master_id         bigint,
    key_id            bigint,
    namespace         text,
    model             text,
    upstream_model    text,
    provider_group_id bigint,
    api_key_id        bigint,
    provider_type     text,
    status_code       integer,
    error             text,
    latency_ms        integer,
    ttfb_ms           integer,
    prompt_tokens     bigint,
    completion_tokens bigint,
    total_tokens      bigint,
    stream            boolean,
    client_ip         text,
    user_agent        text,
    received_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- The sequence follows the table that hands out its values.
ALTER SEQUENCE request_logs_id_seq OWNED BY request_logs.id;

CREATE INDEX request_logs_created_at_idx ON request_logs (created_at);
CREATE INDEX request_logs_master_id_created_at_idx ON request_logs (master_id, created_at);
CREATE INDEX request_logs_key_id_created_at_idx ON request_logs (key_id, created_at);
CREATE INDEX request_logs_model_created_at_idx ON request_logs (model, created_at);
CREATE INDEX request_logs_request_id_idx ON request_logs (request_id);

ALTER TABLE request_logs ATTACH PARTITION request_logs_default DEFAULT;
