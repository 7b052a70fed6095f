-- Pending tenant properties, provider versions on attempts, test messages,
-- sender policy, and node heartbeats.

-- What applied before the latest change of the active provider, and from when
-- the latest change is in effect on every node.
ALTER TABLE tenants ADD COLUMN previous_provider_id TEXT;
ALTER TABLE tenants ADD COLUMN properties_effective_from INTEGER NOT NULL DEFAULT 0;

-- A test message goes through a given provider, ahead of other mail.
ALTER TABLE messages ADD COLUMN test_provider_id TEXT;
ALTER TABLE messages ADD COLUMN on_behalf_name TEXT;
ALTER TABLE messages ADD COLUMN on_behalf_email TEXT;
ALTER TABLE recipients ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
DROP INDEX recipients_due;
CREATE INDEX recipients_due ON recipients (priority DESC, due_at) WHERE status IN ('queued', 'deferred', 'sending');

ALTER TABLE attempts ADD COLUMN provider_id TEXT;
ALTER TABLE attempts ADD COLUMN config_version INTEGER;
ALTER TABLE attempts ADD COLUMN sender_policy TEXT;
ALTER TABLE attempts ADD COLUMN diagnosis TEXT;

CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
