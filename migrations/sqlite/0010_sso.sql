-- Single sign-on. A tenant's admins connect identity providers (OIDC now;
-- `kind` leaves room for SAML) whose client secret is sealed with the
-- platform's secrets key. A connection claims email domains: the addresses
-- it may provision and link, and by which `/sso/discover` finds it.

CREATE TABLE sso_connections (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    scopes TEXT NOT NULL,
    claims TEXT NOT NULL,
    default_role TEXT NOT NULL,
    allow_linking BIGINT NOT NULL,
    enabled BIGINT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sso_connections_tenant ON sso_connections (tenant_id);

-- One connection per domain, platform-wide.
CREATE TABLE sso_domains (
    domain TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE
);
CREATE INDEX sso_domains_connection ON sso_domains (connection_id);

-- The provider's subject, linked to an account.
CREATE TABLE sso_identities (
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (connection_id, subject)
);
CREATE INDEX sso_identities_user ON sso_identities (user_id);

-- A sign-in under way: `id` is the hash of the `state` sent to the
-- provider, `browser` the hash of the cookie that binds it to the browser
-- that started it, `verifier` the sealed PKCE verifier. Used once.
CREATE TABLE sso_logins (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    browser TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    return_to TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX sso_logins_expiry ON sso_logins (expires_at);

-- The connection a session signed in through.
ALTER TABLE sessions ADD COLUMN sso_connection_id TEXT;
