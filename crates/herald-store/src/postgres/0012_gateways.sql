-- Gateways: processes inside a tenant's network that fetch the tenant's mail
-- from Herald and deliver it there. Each authenticates with a random token,
-- of which only the SHA-256 is kept.
CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    token_created_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- The running copies of a gateway, each known by the name it reports.
-- delivered and failed count the outcomes of the hour that began at
-- hour_start: a "current hour" that starts again at the first outcome
-- counted after it ended, not a sliding window.
CREATE TABLE gateway_instances (
    gateway_id TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    address TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    hour_start BIGINT NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (gateway_id, name)
);

-- The gateway that delivers the server's mail inside the tenant's network;
-- NULL for delivery from Herald's own nodes. No cascade: a gateway a server
-- names cannot be deleted.
ALTER TABLE smtp_servers ADD COLUMN gateway_id TEXT REFERENCES gateways (id);
CREATE INDEX smtp_servers_by_gateway ON smtp_servers (gateway_id);
