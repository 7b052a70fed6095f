-- Every change that can alter what a token may do is announced on the
-- `herald_access` channel after its commit, whichever node makes it, so that
-- every node forgets the tokens and tenants it has looked up for API
-- requests: a token revoked, deleted or changed, a person changed or
-- removed (a personal token acts with its person's role), a tenant changed
-- or deleted. Marking a token used (`last_used_at`) changes nothing a token
-- may do and is not announced. Written as triggers, so that no statement,
-- today's or a later one, can change these tables unheard.
CREATE FUNCTION herald_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_access', '');
    RETURN NULL;
END;
$$;

CREATE FUNCTION herald_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(OLD) - 'last_used_at' IS DISTINCT FROM to_jsonb(NEW) - 'last_used_at' THEN
        PERFORM pg_notify('herald_access', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tokens_changed AFTER UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION herald_token_changed();
CREATE TRIGGER tokens_deleted AFTER DELETE OR TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION herald_access_changed();
CREATE TRIGGER persons_changed AFTER UPDATE OR DELETE OR TRUNCATE ON persons
    FOR EACH STATEMENT EXECUTE FUNCTION herald_access_changed();
CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION herald_access_changed();
