-- How many recipients each tenant has waiting (queued, deferred or sending),
-- kept in the same transaction as the recipients it counts: a submission
-- checks the tenant's limit by reading one row, not by counting its backlog.
ALTER TABLE tenants ADD COLUMN queued_recipients INTEGER NOT NULL DEFAULT 0;
-- One pass over the recipients, not one per tenant.
UPDATE tenants SET queued_recipients = q.queued
FROM (
    SELECT tenant_id, count(*) AS queued FROM recipients
    WHERE status IN ('queued', 'deferred', 'sending') GROUP BY tenant_id
) AS q
WHERE q.tenant_id = tenants.id;
