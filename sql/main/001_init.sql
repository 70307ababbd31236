-- 001_init: the main database's data model (DATA.md). Applied by scripts/migrate
-- inside one transaction; no BEGIN/COMMIT here. No triggers: the application
-- sets updated_at itself. Choices where DATA.md is silent: docs/data-model.md.

-- Namespaces: the first part of a model reference `ns.model`; bindings hang off them.
CREATE TABLE namespaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE
                CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    description text NOT NULL DEFAULT ''
                CHECK (char_length(description) <= 512),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO namespaces (name, description) VALUES ('default', 'Default namespace');

-- Masters: tenants. The master key is stored only as its SHA-256 (lowercase hex).
CREATE TABLE masters (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL UNIQUE
                      CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    "group"           text NOT NULL DEFAULT 'default'
                      CHECK ("group" ~ '^[A-Za-z0-9_.-]{0,64}$'),
    namespaces        text[] NOT NULL DEFAULT '{}'
                      CHECK (array_position(namespaces, NULL) IS NULL),
    -- no foreign key: like the namespaces array it is checked by the application,
    -- and a rename rewrites both in one statement (docs/data-model.md)
    default_namespace text NOT NULL DEFAULT 'default'
                      CHECK (default_namespace ~ '^[a-z0-9_-]{1,64}$'),
    max_child_keys    integer NOT NULL DEFAULT 10
                      CHECK (max_child_keys BETWEEN 0 AND 100000),
    global_qps        integer NOT NULL DEFAULT 0
                      CHECK (global_qps >= 0),
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'suspended')),
    epoch             bigint NOT NULL DEFAULT 0
                      CHECK (epoch >= 0),
    key_hash          text NOT NULL UNIQUE
                      CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix        text NOT NULL,
    -- usage totals fed by POST /internal/stats/flush ("masters": [...] deltas)
    request_count     bigint NOT NULL DEFAULT 0
                      CHECK (request_count >= 0),
    token_count       bigint NOT NULL DEFAULT 0
                      CHECK (token_count >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- DATA.md: default_namespace must be in namespaces when that is non-empty
    CONSTRAINT masters_default_namespace_listed
        CHECK (cardinality(namespaces) = 0 OR default_namespace = ANY (namespaces))
);

-- Keys: a master's child keys (what tenants' applications send); token stored as SHA-256 only.
CREATE TABLE keys (
    id                    bigserial PRIMARY KEY,
    master_id             bigint NOT NULL
                          REFERENCES masters (id) ON DELETE CASCADE,
    name                  text NOT NULL DEFAULT ''
                          CHECK (char_length(name) <= 64),
    "group"               text NOT NULL DEFAULT ''
                          CHECK ("group" ~ '^[A-Za-z0-9_.-]{0,64}$'),
    scopes                text[] NOT NULL DEFAULT '{}'
                          CHECK (array_position(scopes, NULL) IS NULL),
    namespaces            text[] NOT NULL DEFAULT '{}'
                          CHECK (array_position(namespaces, NULL) IS NULL),
    model_limits_enabled  boolean NOT NULL DEFAULT false,
    model_limits          text[] NOT NULL DEFAULT '{}'
                          CHECK (array_position(model_limits, NULL) IS NULL),
    allow_ips             text[] NOT NULL DEFAULT '{}'
                          CHECK (array_position(allow_ips, NULL) IS NULL),
    expires_at            timestamptz NULL,
    quota_limit           bigint NOT NULL DEFAULT -1
                          CHECK (quota_limit >= -1),
    quota_used            bigint NOT NULL DEFAULT 0
                          CHECK (quota_used >= 0),
    quota_reset_period    text NOT NULL DEFAULT 'none'
                          CHECK (quota_reset_period IN ('none', 'daily', 'weekly', 'monthly')),
    quota_reset_at        timestamptz NULL,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'disabled', 'expired', 'exhausted')),
    token_hash            text NOT NULL UNIQUE
                          CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    token_prefix          text NOT NULL,
    -- the previous token during a rotation's grace period
    prev_token_hash       text NULL
                          CHECK (prev_token_hash ~ '^[0-9a-f]{64}$'),
    prev_token_expires_at timestamptz NULL,
    last_accessed_at      timestamptz NULL,
    request_count         bigint NOT NULL DEFAULT 0
                          CHECK (request_count >= 0),
    token_count           bigint NOT NULL DEFAULT 0
                          CHECK (token_count >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT keys_prev_token_pair
        CHECK ((prev_token_hash IS NULL) = (prev_token_expires_at IS NULL))
);

CREATE INDEX keys_master_id_idx ON keys (master_id);
CREATE INDEX keys_prev_token_hash_idx ON keys (prev_token_hash) WHERE prev_token_hash IS NOT NULL;
-- for the quota-reset job: keys whose next reset is due
CREATE INDEX keys_quota_reset_at_idx ON keys (quota_reset_at) WHERE quota_reset_period <> 'none';
-- for expiry: active keys with an expiry time
CREATE INDEX keys_expires_at_idx ON keys (expires_at) WHERE expires_at IS NOT NULL AND status = 'active';

-- Provider groups: one upstream provider account (type, endpoint, served models, route group).
CREATE TABLE provider_groups (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    type            text NOT NULL
                    CHECK (type IN ('openai', 'compatible', 'anthropic', 'claude', 'claude-code',
                                    'codex', 'gemini-cli', 'antigravity', 'gemini', 'google',
                                    'aistudio', 'vertex', 'vertex-express')),
    base_url        text NOT NULL DEFAULT ''
                    CHECK (base_url = '' OR base_url ~* '^https?://[^[:space:][:cntrl:]]+$'),
    google_project  text NOT NULL DEFAULT '',
    google_location text NOT NULL DEFAULT '',
    models          text[] NOT NULL DEFAULT '{}'
                    CHECK (array_position(models, NULL) IS NULL),
    "group"         text NOT NULL DEFAULT 'default'
                    CHECK ("group" ~ '^[A-Za-z0-9_.-]{0,64}$'),
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'disabled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- DATA.md: base_url is required for `compatible`
    CONSTRAINT provider_groups_compatible_base_url
        CHECK (type <> 'compatible' OR base_url <> '')
);

-- API keys: upstream credentials inside a provider group; each is one data-plane "provider".
CREATE TABLE api_keys (
    id         bigserial PRIMARY KEY,
    group_id   bigint NOT NULL
               REFERENCES provider_groups (id) ON DELETE RESTRICT,
    api_key    text NOT NULL
               CHECK (api_key <> ''),
    weight     integer NOT NULL DEFAULT 1
               CHECK (weight BETWEEN 1 AND 1000),
    status     text NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'disabled', 'banned')),
    auto_ban   boolean NOT NULL DEFAULT true,
    ban_until  timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX api_keys_group_id_idx ON api_keys (group_id);

-- Models: capabilities published to the data plane, for a public model `m` or a binding key `ns.m`.
CREATE TABLE models (
    id                   bigserial PRIMARY KEY,
    name                 text NOT NULL UNIQUE
                         CHECK (char_length(name) BETWEEN 1 AND 255
                                AND name !~ '[[:space:][:cntrl:]]'),
    kind                 text NOT NULL DEFAULT 'chat'
                         CHECK (kind IN ('chat', 'embedding', 'rerank', 'other')),
    context_window       bigint NOT NULL DEFAULT 0
                         CHECK (context_window >= 0),
    -- NaN sorts above every number in PostgreSQL, so it is excluded explicitly
    cost_per_token       double precision NOT NULL DEFAULT 0
                         CHECK (cost_per_token >= 0 AND cost_per_token < 'Infinity'::float8),
    supports_vision      boolean NOT NULL DEFAULT false,
    supports_functions   boolean NOT NULL DEFAULT false,
    supports_tool_choice boolean NOT NULL DEFAULT false,
    supports_fim         boolean NOT NULL DEFAULT false,
    supports_stream      boolean NOT NULL DEFAULT false,
    max_output_tokens    bigint NOT NULL DEFAULT 0
                         CHECK (max_output_tokens >= 0),
    source               text NOT NULL DEFAULT 'manual'
                         CHECK (source IN ('manual', 'registry')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Model registry entries (e.g. models.dev), keyed by upstream model id; last good fetch.
CREATE TABLE model_registry_models (
    name       text PRIMARY KEY,
    data       jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Model registry state: one row describing the last refresh (GET /admin/models/registry).
CREATE TABLE model_registry_state (
    id         integer PRIMARY KEY DEFAULT 1
               CHECK (id = 1),
    source     text NOT NULL DEFAULT '',
    version    text NOT NULL DEFAULT '',
    updated_at timestamptz NULL,
    models     integer NOT NULL DEFAULT 0
               CHECK (models >= 0),
    last_error text NOT NULL DEFAULT ''
);

INSERT INTO model_registry_state (id) VALUES (1);

-- Bindings: routing of `namespace.public_model` to a provider group (one candidate each).
CREATE TABLE bindings (
    id             bigserial PRIMARY KEY,
    namespace      text NOT NULL
                   REFERENCES namespaces (name) ON UPDATE CASCADE ON DELETE RESTRICT,
    public_model   text NOT NULL
                   CHECK (public_model ~ '^[A-Za-z0-9_.-]{1,64}$'),
    group_id       bigint NOT NULL
                   REFERENCES provider_groups (id) ON DELETE RESTRICT,
    weight         integer NOT NULL DEFAULT 1
                   CHECK (weight BETWEEN 1 AND 1000),
    selector_type  text NOT NULL DEFAULT 'exact'
                   CHECK (selector_type IN ('exact', 'regex', 'normalize_exact')),
    selector_value text NOT NULL DEFAULT '',
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'disabled')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- its index also serves lookups by (namespace, public_model)
    CONSTRAINT bindings_namespace_public_model_group_id_key
        UNIQUE (namespace, public_model, group_id)
);

CREATE INDEX bindings_group_id_idx ON bindings (group_id);

-- Feature flags: name -> string value, published to Redis `config:features`.
CREATE TABLE features (
    name       text PRIMARY KEY
               CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Operation logs: the audit trail, written in the same transaction as the change.
CREATE TABLE operation_logs (
    id          bigserial PRIMARY KEY,
    actor       text NOT NULL
                CHECK (actor <> ''),
    action      text NOT NULL
                CHECK (action <> ''),
    resource    text NOT NULL
                CHECK (resource <> ''),
    resource_id text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    client_ip   text NOT NULL DEFAULT '',
    changes     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX operation_logs_created_at_idx ON operation_logs (created_at);
CREATE INDEX operation_logs_resource_idx ON operation_logs (resource, resource_id);

-- Sync outbox: Redis updates still to apply (at-least-once; written with the change it follows).
CREATE TABLE sync_outbox (
    id              bigserial PRIMARY KEY,
    resource        text NOT NULL
                    CHECK (resource <> ''),
    resource_id     bigint NULL,
    action          text NOT NULL DEFAULT 'upsert'
                    CHECK (action <> ''),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0
                    CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sync_outbox_pending_idx ON sync_outbox (next_attempt_at) WHERE status = 'pending';
-- failed rows are counted for /internal/metrics and /admin/stats
CREATE INDEX sync_outbox_failed_idx ON sync_outbox (id) WHERE status = 'failed';

-- Stats flushes already applied: makes POST /internal/stats/flush idempotent on flush_id.
CREATE TABLE stats_flushes (
    flush_id   text PRIMARY KEY
               CHECK (flush_id <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- for pruning old flush ids
CREATE INDEX stats_flushes_created_at_idx ON stats_flushes (created_at);

-- Webhook settings: one row, the error-rate alert of /admin/logs/webhook.
CREATE TABLE webhook_settings (
    id                   integer PRIMARY KEY DEFAULT 1
                         CHECK (id = 1),
    enabled              boolean NOT NULL DEFAULT false,
    url                  text NOT NULL DEFAULT ''
                         CHECK (url = '' OR url ~* '^https?://[^[:space:][:cntrl:]]+$'),
    secret               text NOT NULL DEFAULT '',
    error_rate_threshold double precision NOT NULL DEFAULT 0.5
                         CHECK (error_rate_threshold BETWEEN 0 AND 1),
    min_requests         integer NOT NULL DEFAULT 20
                         CHECK (min_requests >= 0),
    window_seconds       integer NOT NULL DEFAULT 300
                         CHECK (window_seconds >= 1),
    cooldown_seconds     integer NOT NULL DEFAULT 900
                         CHECK (cooldown_seconds >= 0),
    last_sent_at         timestamptz NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_settings_enabled_needs_url
        CHECK (NOT enabled OR url <> '')
);

INSERT INTO webhook_settings (id) VALUES (1);

-- Service heartbeats: liveness of the background daemon (and others), read by /health.
CREATE TABLE service_heartbeats (
    name    text PRIMARY KEY
            CHECK (name <> ''),
    pid     integer NOT NULL DEFAULT 0,
    host    text NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '',
    beat_at timestamptz NOT NULL DEFAULT now()
);
