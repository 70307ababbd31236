-- tests/bench/gen_scale.sql: an installation of benchmark size, generated
-- directly in PostgreSQL (no API, no outbox rows: the full rebuild is what
-- publishes it). Used by scripts/bench.d/20-snapshot; see docs/bench.md.
--
--   psql "$EZ_PG_DSN" -v ON_ERROR_STOP=1 -v gen=1 -v keys=100000 -v masters=1000 \
--        -v api_keys=2000 -v groups=200 -v bindings=10000 -f tests/bench/gen_scale.sql
--   psql "$EZ_PG_DSN" -v ON_ERROR_STOP=1 -v gen=0 -f tests/bench/gen_scale.sql   (clean only)
--
-- Everything it creates is named bench-scale-* (namespace benchscale), and it
-- always removes a previous run's rows first, so it can be run again on a
-- kept stack. Secrets are fake: token and key hashes are md5-based 64-hex
-- strings, upstream API keys are "sk-benchscale-<md5>".
--
-- Shape: keys spread evenly over the masters; API keys evenly over the
-- provider groups; binding i serves public model bm-(i / C) from group
-- (i mod groups), C = 2 candidates per binding key (1 when there is a single
-- group), and every group serves exactly the models bound to it, so every
-- candidate resolves (exact selector) to the group's active API keys.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
BEGIN;

-- ---- clean (the order the foreign keys need)
DELETE FROM bindings WHERE namespace = 'benchscale';
DELETE FROM api_keys WHERE group_id IN (SELECT id FROM provider_groups WHERE name LIKE 'bench-scale-%');
DELETE FROM provider_groups WHERE name LIKE 'bench-scale-%';
DELETE FROM masters WHERE name LIKE 'bench-scale-%'; -- keys go with them (ON DELETE CASCADE)
DELETE FROM namespaces WHERE name = 'benchscale';

\if :gen
INSERT INTO namespaces (name, description) VALUES ('benchscale', 'bench: generated at scale');

INSERT INTO masters (name, "group", max_child_keys, global_qps, key_hash, key_prefix)
SELECT 'bench-scale-m' || n, 'bench', least(100000, :keys / :masters + 10), (n % 7) * 10,
       md5('bench-scale-master-a' || n) || md5('bench-scale-master-b' || n),
       'mk-' || left(md5('bench-scale-master-a' || n), 4) || '…'
FROM generate_series(0, :masters - 1) AS n;

CREATE TEMP TABLE bench_m ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM masters WHERE name LIKE 'bench-scale-%';

-- A few variations so that the rows are not all alike: every 10th key has a
-- quota, every 20th model limits, every 50th an expiry far in the future.
INSERT INTO keys (master_id, name, scopes, model_limits_enabled, model_limits, quota_limit,
                  expires_at, token_hash, token_prefix)
SELECT m.id, 'bench-scale-k' || g, '{chat}',
       g % 20 = 0, CASE WHEN g % 20 = 0 THEN '{bm-1,bm-2}'::text[] ELSE '{}' END,
       CASE WHEN g % 10 = 0 THEN 1000000 ELSE -1 END,
       CASE WHEN g % 50 = 0 THEN now() + interval '365 days' END,
       md5('bench-scale-key-a' || g) || md5('bench-scale-key-b' || g),
       'sk-' || left(md5('bench-scale-key-a' || g), 4) || '…'
FROM generate_series(0, :keys - 1) AS g
JOIN bench_m m ON m.n = g % :masters;

INSERT INTO provider_groups (name, type, base_url)
SELECT 'bench-scale-pg' || n, 'compatible', 'https://bench-' || n || '.invalid/v1'
FROM generate_series(0, :groups - 1) AS n;

CREATE TEMP TABLE bench_g ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM provider_groups
WHERE name LIKE 'bench-scale-%';

INSERT INTO api_keys (group_id, api_key, weight)
SELECT pg.id, 'sk-benchscale-' || md5('bench-scale-api-' || a), 1 + a % 3
FROM generate_series(0, :api_keys - 1) AS a
JOIN bench_g pg ON pg.n = a % :groups;

INSERT INTO bindings (namespace, public_model, group_id, weight)
SELECT 'benchscale', 'bm-' || (b / least(2, :groups)), pg.id, 1
FROM generate_series(0, :bindings - 1) AS b
JOIN bench_g pg ON pg.n = b % :groups;

UPDATE provider_groups g SET models = s.models
FROM (SELECT group_id, array_agg(public_model ORDER BY public_model) AS models
      FROM bindings WHERE namespace = 'benchscale' GROUP BY group_id) AS s
WHERE g.id = s.group_id;
\endif

COMMIT;

-- Fresh planner statistics, as a live installation would have.
ANALYZE masters;
ANALYZE keys;
ANALYZE provider_groups;
ANALYZE api_keys;
ANALYZE bindings;
