-- How many recipients each tenant has waiting (queued, deferred or sending),
-- kept in the same transaction as the recipients it counts: a submission
-- checks the tenant's limit by reading one row, not by counting its backlog.
ALTER TABLE tenants ADD COLUMN queued_recipients BIGINT NOT NULL DEFAULT 0;
UPDATE tenants SET queued_recipients = (
    SELECT count(*) FROM recipients r
    WHERE r.tenant_id = tenants.id AND r.status IN ('queued', 'deferred', 'sending')
);
