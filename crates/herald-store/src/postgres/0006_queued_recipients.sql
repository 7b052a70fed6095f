-- How many recipients each tenant has waiting (queued, deferred or sending),
-- kept in the same transaction as the recipients it counts: a submission
-- checks the tenant's limit by reading one row, not by counting its backlog.
ALTER TABLE tenants ADD COLUMN queued_recipients BIGINT NOT NULL DEFAULT 0;
-- One pass over the recipients, not one per tenant.
UPDATE tenants SET queued_recipients = q.queued
FROM (
    SELECT tenant_id, count(*) AS queued FROM recipients
    WHERE status IN ('queued', 'deferred', 'sending') GROUP BY tenant_id
) AS q
WHERE q.tenant_id = tenants.id;
-- Changes to the count go to one of several rows per tenant, chosen by the
-- connection, so that concurrent transactions of one tenant do not queue for
-- one row through each other's commits; the count is the column above plus
-- these rows. `herald migrate-store` copies the column (the count from SQLite)
-- and leaves these rows to the running nodes.
CREATE TABLE tenant_queue_shards (
    tenant_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    queued BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, shard)
);
