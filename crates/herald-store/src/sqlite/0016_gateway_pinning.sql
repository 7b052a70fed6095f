-- Mail pinned to a gateway: a recipient whose route is an SMTP server that
-- only a tenant's gateway reaches names that gateway, and only the gateway's
-- instances claim it. Nodes' claims and their next-due time read the two
-- partial indexes below, which now leave pinned recipients out, so a
-- gateway's backlog (due, while no instance of it is alive) never wakes a
-- node nor is walked by its claims.
ALTER TABLE recipients ADD COLUMN gateway_id TEXT;

DROP INDEX recipients_tenant_due;
CREATE INDEX recipients_tenant_due ON recipients (tenant_id, priority, due_at)
    WHERE status IN ('queued', 'deferred', 'sending') AND gateway_id IS NULL;
DROP INDEX recipients_next_due;
CREATE INDEX recipients_next_due ON recipients (due_at, tenant_id)
    WHERE status IN ('queued', 'deferred', 'sending') AND gateway_id IS NULL;

-- A gateway's claims: its test messages first, then the rest by due time.
CREATE INDEX recipients_gateway_due ON recipients (gateway_id, priority DESC, due_at)
    WHERE status IN ('queued', 'deferred', 'sending') AND gateway_id IS NOT NULL;
