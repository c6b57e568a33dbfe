-- Every change to what a gateway caches about a caller (sessions, people,
-- tenants with their plan and overrides, memberships with roles and groups,
-- service accounts, API keys), written by triggers so that no write path
-- can forget it: gateways follow this feed (once a second) and drop what it
-- names, instead of reading every caller's facts again every few seconds.
-- `kind` says which cache, `id` which entry: a session, user or tenant id,
-- an API key's prefix, or for `standing` the tenant whose members' roles
-- and groups changed. Times are the database's own clock, as its readers'.
-- It names ids only (no tenant data), so every instance reads all of it.
CREATE TABLE liveness_changes (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX liveness_changes_at ON liveness_changes (changed_at);

-- Records the change of a row: kind `TG_ARGV[0]`, id the row's column
-- `TG_ARGV[1]` (the new row's on insert, the old row's otherwise).
CREATE FUNCTION record_liveness_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES (
        TG_ARGV[0],
        CASE WHEN TG_OP = 'INSERT' THEN to_jsonb(NEW) ELSE to_jsonb(OLD) END ->> TG_ARGV[1],
        CAST(extract(epoch FROM clock_timestamp()) AS BIGINT)
    );
    RETURN NULL;
END
$$;

-- A session's use (`last_seen_at`, `ip`) changes nothing a gateway holds.
CREATE TRIGGER sessions_liveness
AFTER UPDATE OF id, user_id, tenant_id, amr, expires_at, revoked_at, sso_connection_id OR DELETE ON sessions
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('session', 'id');

CREATE TRIGGER users_liveness AFTER UPDATE OR DELETE ON users
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('user', 'id');

CREATE TRIGGER tenants_liveness AFTER UPDATE OR DELETE ON tenants
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('tenant', 'id');

-- A tenant's entitlements are its plan and its overrides.
CREATE TRIGGER entitlement_overrides_liveness AFTER INSERT OR UPDATE OR DELETE ON entitlement_overrides
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('tenant', 'tenant_id');

-- Standings: memberships, the roles they name, groups and their members,
-- service accounts. Inserts count too: a member added is no longer refused.
CREATE TRIGGER memberships_liveness AFTER INSERT OR UPDATE OR DELETE ON memberships
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('standing', 'tenant_id');
CREATE TRIGGER roles_liveness AFTER INSERT OR UPDATE OR DELETE ON roles
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('standing', 'tenant_id');
CREATE TRIGGER tenant_groups_liveness AFTER UPDATE OR DELETE ON tenant_groups
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('standing', 'tenant_id');
CREATE TRIGGER group_members_liveness AFTER INSERT OR UPDATE OR DELETE ON group_members
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('standing', 'tenant_id');
CREATE TRIGGER service_accounts_liveness AFTER INSERT OR UPDATE OR DELETE ON service_accounts
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('standing', 'tenant_id');

-- A key's use (`last_used_at`) changes nothing a gateway holds.
CREATE TRIGGER api_keys_liveness
AFTER UPDATE OF id, tenant_id, prefix, secret_hash, scopes, owner_user_id, owner_service_account_id, expires_at, revoked_at
OR DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('key', 'prefix');
