-- A count of the changes that can alter what a token may do, moved on by
-- triggers in the changing transaction, whichever process makes it (the
-- node, or `herald operator token revoke` on the same file): a token
-- changed (but for marking it used, `last_used_at`) or deleted, a person
-- changed or removed (a personal token acts with its person's role), a
-- tenant changed (but for its count of queued recipients) or deleted. A
-- node keeps the tokens and tenants it has looked up while the count stays
-- where it was (see `access.rs`). A later column of these tables that
-- changes what a token may do belongs in the column lists below.
CREATE TABLE access_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT INTO access_changes (id, count) VALUES (1, 0);

CREATE TRIGGER tokens_changed
    AFTER UPDATE OF id, tenant_id, name, role, hash, created_at, person_id, bootstrap, revoked_at
    ON tokens
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_deleted AFTER DELETE ON tokens
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
CREATE TRIGGER persons_changed AFTER UPDATE ON persons
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
CREATE TRIGGER persons_deleted AFTER DELETE ON persons
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_changed
    AFTER UPDATE OF id, slug, name, credential_storage, notification_provider_id,
        previous_provider_id, properties_effective_from, created_at
    ON tenants
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants
    BEGIN UPDATE access_changes SET count = count + 1 WHERE id = 1; END;
