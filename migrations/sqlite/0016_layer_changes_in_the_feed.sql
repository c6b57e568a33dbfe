-- A tenant's policy layer activated or rolled back is one more kind of
-- change in the one feed (`layer`, the tenant's id), written by a trigger
-- with the database's clock like the others; the separate feed that the
-- store wrote with each instance's own clock goes.
CREATE TRIGGER tenant_policies_liveness_update AFTER UPDATE OF status ON tenant_policies BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('layer', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER tenant_policies_liveness_delete AFTER DELETE ON tenant_policies BEGIN
    INSERT INTO liveness_changes (kind, id, changed_at) VALUES ('layer', old.tenant_id, CAST(strftime('%s', 'now') AS INTEGER));
END;
DROP TABLE policy_changes;
