-- Every change to what a gateway caches about a caller (sessions, people,
-- tenants with their plan and overrides, memberships with roles and groups,
-- service accounts, API keys), written by triggers so that no write path
-- can forget it: gateways follow this feed (once a second) and drop what it
-- names, instead of reading every caller's facts again every few seconds.
-- `kind` says which cache, `id` which entry: a session, user or tenant id,
-- an API key's prefix, or for `standing` the tenant whose members' roles
-- and groups changed. Times are the database's own clock, as its readers'.
CREATE TABLE liveness_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX liveness_changes_at ON liveness_changes (changed_at);

-- A session's use (`last_seen_at`, `ip`) changes nothing a gateway holds.
CREATE TRIGGER sessions_liveness_update
AFTER UPDATE OF id, user_id, tenant_id, amr, expires_at, revoked_at, sso_connection_id ON sessions BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('session', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER sessions_liveness_delete AFTER DELETE ON sessions BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('session', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER users_liveness_update AFTER UPDATE ON users BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('user', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER users_liveness_delete AFTER DELETE ON users BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('user', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER tenants_liveness_update AFTER UPDATE ON tenants BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('tenant', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER tenants_liveness_delete AFTER DELETE ON tenants BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('tenant', old.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- A tenant's entitlements are its plan and its overrides.
CREATE TRIGGER entitlement_overrides_liveness_insert AFTER INSERT ON entitlement_overrides BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('tenant', new.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER entitlement_overrides_liveness_update AFTER UPDATE ON entitlement_overrides BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('tenant', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER entitlement_overrides_liveness_delete AFTER DELETE ON entitlement_overrides BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('tenant', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- Standings: memberships, the roles they name, groups and their members,
-- service accounts. Inserts count too: a member added is no longer refused.
CREATE TRIGGER memberships_liveness_insert AFTER INSERT ON memberships BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', new.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER memberships_liveness_update AFTER UPDATE ON memberships BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER memberships_liveness_delete AFTER DELETE ON memberships BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER roles_liveness_insert AFTER INSERT ON roles BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', new.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER roles_liveness_update AFTER UPDATE ON roles BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER roles_liveness_delete AFTER DELETE ON roles BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER tenant_groups_liveness_update AFTER UPDATE ON tenant_groups BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER tenant_groups_liveness_delete AFTER DELETE ON tenant_groups BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER group_members_liveness_insert AFTER INSERT ON group_members BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', new.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER group_members_liveness_update AFTER UPDATE ON group_members BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER group_members_liveness_delete AFTER DELETE ON group_members BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER service_accounts_liveness_insert AFTER INSERT ON service_accounts BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', new.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER service_accounts_liveness_update AFTER UPDATE ON service_accounts BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER service_accounts_liveness_delete AFTER DELETE ON service_accounts BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('standing', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- A key's use (`last_used_at`) changes nothing a gateway holds.
CREATE TRIGGER api_keys_liveness_update
AFTER UPDATE OF id, tenant_id, prefix, secret_hash, scopes, owner_user_id, owner_service_account_id, expires_at, revoked_at
ON api_keys BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('key', old.prefix, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER api_keys_liveness_delete AFTER DELETE ON api_keys BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('key', old.prefix, CAST(strftime('%s', 'now') AS INTEGER));
END;
