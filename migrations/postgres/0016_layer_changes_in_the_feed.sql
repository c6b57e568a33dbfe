-- A tenant's policy layer activated or rolled back is one more kind of
-- change in the one feed (`layer`, the tenant's id), written by a trigger
-- with the database's clock like the others; the separate feed that the
-- store wrote with each instance's own clock goes.
CREATE TRIGGER tenant_policies_liveness AFTER UPDATE OF status OR DELETE ON tenant_policies
FOR EACH ROW EXECUTE FUNCTION record_liveness_change('layer', 'tenant_id');
DROP TABLE policy_changes;
