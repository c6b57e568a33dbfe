-- SCIM 2.0 provisioning. An identity provider holds a tenant's SCIM token
-- (hashed here like API keys) and pushes that tenant's people and groups.
-- A SCIM user is the tenant's record of a person, linked to the account
-- that is its member; a SCIM group is one of the tenant's groups, with
-- members among the SCIM users. Times here are unix milliseconds, so that
-- `meta.lastModified gt` finds changes made within the same second.

CREATE TABLE scim_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX scim_tokens_tenant ON scim_tokens (tenant_id);

-- How provisioning maps to roles: the role of a SCIM user without a mapped
-- group, and group display names (lower case) to roles.
CREATE TABLE scim_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    default_role TEXT NOT NULL,
    group_roles TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- `user_id` is the linked account, NULL while an invitation to an existing
-- account of `email` waits for its owner. `resource` is the stored
-- attributes as canonical JSON; the columns beside it are what filters and
-- sorting read (case-insensitive ones lower-cased).
CREATE TABLE scim_users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    email TEXT NOT NULL,
    user_name TEXT NOT NULL,
    user_name_lower TEXT NOT NULL,
    external_id TEXT,
    display_name_lower TEXT,
    given_name_lower TEXT,
    family_name_lower TEXT,
    active BIGINT NOT NULL,
    resource TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (tenant_id, user_name_lower);
CREATE UNIQUE INDEX scim_users_external_id ON scim_users (tenant_id, external_id);
CREATE UNIQUE INDEX scim_users_account ON scim_users (tenant_id, user_id);
CREATE INDEX scim_users_modified ON scim_users (tenant_id, modified_ms);
CREATE INDEX scim_users_created ON scim_users (tenant_id, created_ms);
CREATE INDEX scim_users_display_name ON scim_users (tenant_id, display_name_lower);
CREATE INDEX scim_users_family_name ON scim_users (tenant_id, family_name_lower);

-- The multi-valued attributes filters reach into (`emails`, `phoneNumbers`).
CREATE TABLE scim_user_values (
    tenant_id TEXT NOT NULL,
    scim_user_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    position BIGINT NOT NULL,
    value_lower TEXT NOT NULL,
    type_lower TEXT,
    display_lower TEXT,
    is_primary BIGINT NOT NULL,
    PRIMARY KEY (scim_user_id, attr, position),
    FOREIGN KEY (tenant_id, scim_user_id) REFERENCES scim_users (tenant_id, id) ON DELETE CASCADE
);
-- Led by the value: `eq` filters find their rows, and SQLite (without
-- statistics) never takes it for a scan of every `emails` of a tenant.
CREATE INDEX scim_user_values_value ON scim_user_values (value_lower, attr);

-- Trigrams of the elements' values, so `co`, `sw` and `ew` filters find
-- their few rows without reading every value of a large tenant. pg_trgm is
-- a trusted extension (the database's owner may create it) shipped with
-- PostgreSQL; where it cannot be created, those filters still work, by
-- reading the tenant's values.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available: SCIM substring filters will scan';
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX scim_user_values_grams ON scim_user_values USING gin (value_lower gin_trgm_ops);
    END IF;
END
$$;

-- Groups provisioned over SCIM: their `externalId`, a version for ETags.
ALTER TABLE tenant_groups ADD COLUMN external_id TEXT;
ALTER TABLE tenant_groups ADD COLUMN scim BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_groups ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX tenant_groups_external_id ON tenant_groups (tenant_id, external_id);

-- A SCIM group's members as the identity provider sent them; the members of
-- the tenant's group follow for the SCIM users that are active and linked.
CREATE TABLE scim_group_members (
    tenant_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    scim_user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, scim_user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES tenant_groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, scim_user_id) REFERENCES scim_users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX scim_group_members_user ON scim_group_members (tenant_id, scim_user_id);

-- Row-level security, as for the other tenant tables; a token is found by
-- its prefix before its tenant is known.
ALTER TABLE scim_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scim_tokens
    USING (tenant_id = current_setting('app.tenant_id', true)
           OR prefix = current_setting('app.key_prefix', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE scim_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scim_settings
    USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE scim_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scim_users
    USING (tenant_id = current_setting('app.tenant_id', true));

-- The one exception: any transaction may read `scim_user_values`, the
-- lower-cased copies that filters match against. PostgreSQL evaluates no
-- `LIKE` (not leakproof) before a row-level security condition, so under
-- one the trigram index could never serve `co`, `sw` and `ew`. Its rows
-- are never returned to anyone: every query of it names the tenant and
-- yields ids that are joined to `scim_users`, which row-level security
-- binds. Writes stay bound to the tenant; nothing updates it.
ALTER TABLE scim_user_values ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_user_values FORCE ROW LEVEL SECURITY;
CREATE POLICY filter_reads ON scim_user_values FOR SELECT USING (true);
CREATE POLICY tenant_inserts ON scim_user_values FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_deletes ON scim_user_values FOR DELETE
    USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE scim_group_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_group_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scim_group_members
    USING (tenant_id = current_setting('app.tenant_id', true));
