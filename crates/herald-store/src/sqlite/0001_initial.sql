-- Herald's first SQLite schema. Times are milliseconds since the Unix epoch; ids are UUID text.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    credential_storage INTEGER NOT NULL DEFAULT 0,
    notification_provider_id TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE smtp_servers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    security TEXT NOT NULL,
    requires_auth INTEGER NOT NULL,
    tls_verify INTEGER NOT NULL,
    tls_ca_pem TEXT,
    tls_server_name TEXT,
    helo_name TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE smtp_accounts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES smtp_servers(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    sealed_secret TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (server_id, username)
);

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    smtp_server_id TEXT NOT NULL REFERENCES smtp_servers(id),
    account_id TEXT REFERENCES smtp_accounts(id),
    from_address TEXT NOT NULL,
    from_name TEXT,
    reply_to TEXT,
    fallback_recipient TEXT,
    sender_policy TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    idempotency_key TEXT,
    subject TEXT NOT NULL,
    text_body TEXT,
    html_body TEXT,
    reply_to TEXT,
    headers TEXT NOT NULL,
    header_to TEXT NOT NULL,
    header_cc TEXT NOT NULL,
    used_fallback INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX messages_by_tenant ON messages (tenant_id, created_at);

-- One row per recipient: each has its own status, schedule and lease.
-- due_at is when the row next needs a worker: the next attempt for queued and
-- deferred rows, the lease's end for sending rows.
CREATE TABLE recipients (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    due_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recipients_by_message ON recipients (message_id, position);
CREATE INDEX recipients_due ON recipients (due_at) WHERE status IN ('queued', 'deferred', 'sending');

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient_id TEXT NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    node TEXT NOT NULL,
    server TEXT NOT NULL,
    outcome TEXT NOT NULL,
    step TEXT,
    code INTEGER,
    enhanced_code TEXT,
    response TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    remote_addr TEXT,
    tls_version TEXT,
    tls_cipher TEXT
);
CREATE INDEX attempts_by_recipient ON attempts (recipient_id, id);

CREATE TABLE captured (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    content BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX captured_by_tenant ON captured (tenant_id, id);
