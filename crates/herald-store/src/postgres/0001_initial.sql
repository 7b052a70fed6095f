-- Herald's first PostgreSQL schema: the same tables and columns as the SQLite
-- schema after its migrations 0001 to 0004. Times are milliseconds since the
-- Unix epoch (BIGINT); ids are UUID text, as on SQLite, so both stores read them
-- back the same way. Counts that the store hands out as u32 are BIGINT because
-- a u32 does not fit in INTEGER. JSON that must read back exactly as it was
-- written (audit details, attempt diagnoses) is TEXT, not JSONB: JSONB
-- rewrites numbers and key order and refuses \u0000. Lists of validated
-- strings are JSONB.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    credential_storage BOOLEAN NOT NULL DEFAULT FALSE,
    notification_provider_id TEXT,
    -- What applied before the latest change of the active provider, and from
    -- when the latest change is in effect on every node.
    previous_provider_id TEXT,
    properties_effective_from BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE persons (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    person_id TEXT REFERENCES persons (id) ON DELETE CASCADE
);
CREATE INDEX tokens_by_tenant ON tokens (tenant_id, created_at);
-- PostgreSQL does not index the referencing side of a foreign key; deleting a
-- person would otherwise scan every token.
CREATE INDEX tokens_by_person ON tokens (person_id);

CREATE TABLE smtp_servers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    security TEXT NOT NULL,
    requires_auth BOOLEAN NOT NULL,
    tls_verify BOOLEAN NOT NULL,
    tls_ca_pem TEXT,
    tls_server_name TEXT,
    helo_name TEXT,
    max_connections BIGINT NOT NULL DEFAULT 4,
    max_messages_per_connection BIGINT NOT NULL DEFAULT 100,
    idle_timeout_secs BIGINT NOT NULL DEFAULT 30,
    rate_limit_per_minute BIGINT,
    command_timeout_secs BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE smtp_accounts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES smtp_servers (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    sealed_secret TEXT,
    created_at BIGINT NOT NULL,
    oauth2_token_url TEXT,
    oauth2_client_id TEXT,
    oauth2_scope TEXT,
    person_id TEXT REFERENCES persons (id),
    UNIQUE (server_id, username)
);
CREATE INDEX smtp_accounts_by_person ON smtp_accounts (person_id);

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    smtp_server_id TEXT NOT NULL REFERENCES smtp_servers (id),
    account_id TEXT REFERENCES smtp_accounts (id),
    from_address TEXT NOT NULL,
    from_name TEXT,
    reply_to TEXT,
    fallback_recipient TEXT,
    sender_policy TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
-- The "still in use" checks before deleting a server or an account look these up.
CREATE INDEX providers_by_server ON providers (smtp_server_id);
CREATE INDEX providers_by_account ON providers (account_id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    idempotency_key TEXT,
    subject TEXT NOT NULL,
    text_body TEXT,
    html_body TEXT,
    reply_to TEXT,
    -- A JSON array of [name, value] pairs, in the order given.
    headers JSONB NOT NULL,
    -- JSON arrays of addresses, as they appear in the To and Cc headers.
    header_to JSONB NOT NULL,
    header_cc JSONB NOT NULL,
    used_fallback BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    -- A test message goes through a given provider, ahead of other mail.
    test_provider_id TEXT,
    on_behalf_name TEXT,
    on_behalf_email TEXT,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX messages_by_tenant ON messages (tenant_id, created_at);

-- One row per recipient: each has its own status, schedule and lease.
-- due_at is when the row next needs a worker: the next attempt for queued and
-- deferred rows, the lease's end for sending rows.
CREATE TABLE recipients (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    due_at BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    -- Higher goes first; test messages jump the queue.
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recipients_by_message ON recipients (message_id, position);
-- Only rows that still need a worker are in the index the claim walks, so it
-- stays small however many finished recipients the table holds.
CREATE INDEX recipients_due ON recipients (priority DESC, due_at) WHERE status IN ('queued', 'deferred', 'sending');

CREATE TABLE attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient_id TEXT NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    node TEXT NOT NULL,
    server TEXT NOT NULL,
    outcome TEXT NOT NULL,
    step TEXT,
    code INTEGER,
    enhanced_code TEXT,
    response TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    remote_addr TEXT,
    tls_version TEXT,
    tls_cipher TEXT,
    provider_id TEXT,
    config_version BIGINT,
    sender_policy TEXT,
    -- For test messages: every step of the session, as JSON text.
    diagnosis TEXT
);
CREATE INDEX attempts_by_recipient ON attempts (recipient_id, id);

CREATE TABLE captured (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    -- A JSON array of the envelope's recipient addresses.
    recipients JSONB NOT NULL,
    content BYTEA NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX captured_by_tenant ON captured (tenant_id, id);
CREATE INDEX captured_by_message ON captured (message_id);

-- Who changed what, when and from where. Never a secret value.
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    token_id TEXT,
    remote_addr TEXT,
    action TEXT NOT NULL,
    object_id TEXT,
    -- JSON text.
    details TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);

-- Every node that ever reported, with its latest heartbeat.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    -- Comma-separated, as on SQLite.
    roles TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
