-- The claim's index carries the tenant, so that passing over a stalled
-- tenant's mail reads the index alone, not each row; and the next due time is
-- read from an index ordered by it, not found by walking the whole queue.
DROP INDEX recipients_due;
CREATE INDEX recipients_due ON recipients (priority DESC, due_at, tenant_id) WHERE status IN ('queued', 'deferred', 'sending');
CREATE INDEX recipients_next_due ON recipients (due_at, tenant_id) WHERE status IN ('queued', 'deferred', 'sending');
