-- SMTP ingress: who may submit mail over SMTP, and where a message came from;
-- and message lists paged by (created_at, id).

-- A tenant's SMTP credential: a username (unique across the installation,
-- since AUTH names no tenant) and the SHA-256 of its random password.
CREATE TABLE smtp_credentials (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    rate_limit_per_minute INTEGER,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX smtp_credentials_by_tenant ON smtp_credentials (tenant_id, created_at);

-- A tenant's IP connector: mail from these networks needs no AUTH. The
-- networks of all connectors never overlap (checked when one is created).
CREATE TABLE smtp_connectors (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- A JSON array of networks in CIDR notation.
    cidrs TEXT NOT NULL,
    rate_limit_per_minute INTEGER,
    created_at BIGINT NOT NULL
);
CREATE INDEX smtp_connectors_by_tenant ON smtp_connectors (tenant_id, created_at);

-- 'api' or 'smtp'. SMTP mail keeps the message as received (raw) and who
-- sent it; API mail may carry attachments (a JSON array, content in base64).
ALTER TABLE messages ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
ALTER TABLE messages ADD COLUMN smtp_credential_id TEXT;
ALTER TABLE messages ADD COLUMN smtp_connector_id TEXT;
ALTER TABLE messages ADD COLUMN client_addr TEXT;
ALTER TABLE messages ADD COLUMN raw BYTEA;
ALTER TABLE messages ADD COLUMN attachments TEXT;

-- Message lists are pages in (created_at, id) order, newest first: the id
-- settles ties, so the index gives the order whole and a page starts where
-- the last one ended (keyset pagination).
DROP INDEX messages_by_tenant;
CREATE INDEX messages_by_tenant ON messages (tenant_id, created_at, id);
