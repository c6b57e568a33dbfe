-- Every activation or rollback of a tenant's policy layer, with when it
-- happened: gateways and backends follow this feed (once a second) instead
-- of asking each tenant for its active version again and again. It names
-- tenants only (no tenant data), so every instance reads all of it.
CREATE TABLE policy_changes (
    seq BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX policy_changes_at ON policy_changes (changed_at);
