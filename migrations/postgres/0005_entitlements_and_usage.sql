-- A platform administrator's grant to one tenant on top of its plan: a
-- feature switched on or off (`value` 1 or 0) or a limit set (`value`, NULL
-- for unlimited), until `expires_at` when given.
CREATE TABLE entitlement_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('feature', 'limit')),
    value BIGINT,
    expires_at BIGINT,
    granted_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Usage per tenant, metric and period (`2026-11`): requests the gateways
-- forwarded (`api_calls`, added in batches) and what products report.
CREATE TABLE usage_counters (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    period TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, metric, period)
);

-- Products' usage reports by idempotency key: a repeated key is counted
-- once and answered from here.
CREATE TABLE usage_reports (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    period TEXT NOT NULL,
    reported_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);

ALTER TABLE entitlement_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE entitlement_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entitlement_overrides
    USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE usage_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_counters
    USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE usage_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_reports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_reports
    USING (tenant_id = current_setting('app.tenant_id', true));
