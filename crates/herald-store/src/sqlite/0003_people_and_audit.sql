-- Persons of a tenant, personal tokens, accounts bound to persons, and the audit log.

CREATE TABLE persons (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);

ALTER TABLE tokens ADD COLUMN person_id TEXT REFERENCES persons(id) ON DELETE CASCADE;
ALTER TABLE smtp_accounts ADD COLUMN person_id TEXT REFERENCES persons(id);

-- Who changed what, when and from where. Never a secret value.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    token_id TEXT,
    remote_addr TEXT,
    action TEXT NOT NULL,
    object_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);
