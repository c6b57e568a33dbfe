-- SAML 2.0 connections: the identity provider's metadata (XML, with its
-- entity id, single sign-on endpoint and signing certificates) kept with
-- the connection; and the ids of the assertions accepted, until they
-- expire, so that none is accepted twice.

ALTER TABLE sso_connections ADD COLUMN idp_metadata TEXT;

CREATE TABLE sso_assertions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sso_assertions_expiry ON sso_assertions (tenant_id, expires_at);

ALTER TABLE sso_assertions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_assertions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sso_assertions
    USING (tenant_id = current_setting('app.tenant_id', true));
