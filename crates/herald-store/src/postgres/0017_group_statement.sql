-- A group of single submissions is stored by one statement (messages,
-- recipients and the tenants' queued counts together, see `postgres/group.rs`).
-- When the group would take a tenant's queued recipients past a message's
-- limit, the statement calls this to stop itself: nothing of the group is
-- stored, and each of its messages is then tried alone for its own answer.
CREATE FUNCTION herald_queue_full(queue_limit BIGINT) RETURNS TEXT LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the tenant''s queue would pass its limit of % recipients', queue_limit;
END;
$$;
