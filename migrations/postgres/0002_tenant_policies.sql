-- Tenants' own policy layers: versions, at most one active per tenant.
CREATE TABLE tenant_policies (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'retired')),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activated_at BIGINT,
    UNIQUE (tenant_id, version)
);
CREATE INDEX tenant_policies_active ON tenant_policies (tenant_id, status);

ALTER TABLE tenant_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_policies
    USING (tenant_id = current_setting('app.tenant_id', true));
