-- 001_request_logs: the log database (EZ_LOG_PG_DSN, else the main DB). Applied
-- by scripts/migrate in one transaction, tracked in log_schema_migrations.
-- Not partitioned yet (a later migration adds EZ_LOG_PARTITIONING). No CHECK
-- constraints on request_logs on purpose: records are validated when
-- /internal/logs accepts them, and a constraint the validator missed would
-- make a whole batch of already-accepted records unwritable (see
-- docs/data-model.md).

-- Request logs: one row per request the data plane reports.
CREATE TABLE request_logs (
    id                bigserial PRIMARY KEY,
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
    received_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX request_logs_created_at_idx ON request_logs (created_at);
CREATE INDEX request_logs_master_id_created_at_idx ON request_logs (master_id, created_at);
CREATE INDEX request_logs_key_id_created_at_idx ON request_logs (key_id, created_at);
CREATE INDEX request_logs_model_created_at_idx ON request_logs (model, created_at);
CREATE INDEX request_logs_request_id_idx ON request_logs (request_id);

-- Log sink progress: one row, the spool position up to which records are in request_logs
-- (updated in the same transaction as the rows it covers, so a crash never writes twice).
CREATE TABLE log_sink_progress (
    id           integer PRIMARY KEY DEFAULT 1
                 CHECK (id = 1),
    written_upto bigint NOT NULL DEFAULT 0
                 CHECK (written_upto >= 0)
);

INSERT INTO log_sink_progress (id) VALUES (1);
