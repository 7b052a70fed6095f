-- Claims serve tenants in turn: the next tenant with unfinished mail, what a
-- tenant has due (test messages, then the rest by due time) and its earliest
-- due time are each a lookup in this index, whatever the size of any
-- tenant's backlog. It replaces the claim's old order over everyone's mail.
CREATE INDEX recipients_tenant_due ON recipients (tenant_id, priority, due_at)
    WHERE status IN ('queued', 'deferred', 'sending');
DROP INDEX recipients_due;
