-- Operator tokens that can be listed and revoked. `bootstrap` marks the token
-- that came from HERALD_BOOTSTRAP_TOKEN; a revoked bootstrap token is kept with
-- `revoked_at` set (every other token is deleted when revoked), so that a node
-- started again with the same value does not bring it back.
ALTER TABLE tokens ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
-- Earlier versions named the bootstrap token after the variable it came from.
UPDATE tokens SET bootstrap = 1
    WHERE tenant_id IS NULL AND role = 'operator' AND name = 'HERALD_BOOTSTRAP_TOKEN';
