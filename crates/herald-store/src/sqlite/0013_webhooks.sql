-- Delivery webhooks: tenants' endpoints, and the outbox of events for them.

-- A tenant's endpoint. `events` is a bit set of event types; the secrets are
-- sealed, bound to the webhook's id (the previous one, after a rotation,
-- signs beside the new one until previous_secret_until).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    sealed_secret TEXT NOT NULL,
    previous_sealed_secret TEXT,
    previous_secret_until INTEGER,
    disabled_reason TEXT,
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id, created_at);

-- One event for one webhook, written in the transaction of the outcome that
-- caused it. `seq` orders a message's events for a webhook (its *chain*),
-- and a chain's pending events never fall due out of that order: an event
-- is written due no earlier than the pending ones before it, and a retry
-- puts off the rest of its chain with it. So claims take due events in
-- (due_at, seq) order and still keep each chain's order. A claim leases an
-- event until lease_until, with a new lease_token, naming the node and the
-- process holding it (which gives it back when started again); a lease that
-- ran out is given back by the next claim. Events not leased are *ready*:
-- claims read only those, never passing over the ones in flight. The latest
-- attempt is kept on the row.
CREATE TABLE webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    message_id TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    lease_until INTEGER,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_incarnation TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    response_status INTEGER,
    error TEXT,
    duration_ms INTEGER
);
CREATE INDEX webhook_outbox_ready ON webhook_outbox (due_at, seq) WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX webhook_outbox_leased ON webhook_outbox (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX webhook_outbox_chain ON webhook_outbox (webhook_id, message_id, seq) WHERE status = 'pending';
CREATE INDEX webhook_outbox_by_webhook ON webhook_outbox (webhook_id, seq);
