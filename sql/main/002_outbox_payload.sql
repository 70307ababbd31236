-- 002_outbox_payload: what a deletion must remove from Redis cannot be read back
-- from PostgreSQL after the row is gone (a deleted key's token hash, a binding's
-- old name), so the outbox row carries it.
ALTER TABLE sync_outbox ADD COLUMN payload jsonb NOT NULL DEFAULT '{}';
