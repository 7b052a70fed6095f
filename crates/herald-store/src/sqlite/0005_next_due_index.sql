-- The next due time is read from an index ordered by it, not found by walking
-- the whole queue; with the tenant in it, passing over a stalled tenant's mail
-- reads the index alone.
CREATE INDEX recipients_next_due ON recipients (due_at, tenant_id) WHERE status IN ('queued', 'deferred', 'sending');
