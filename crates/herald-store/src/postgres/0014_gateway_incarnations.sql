-- The process (incarnation) of each gateway instance that reported last,
-- and the one before it with when that one was last seen. Two processes may
-- share an instance's name (a rolling restart, or two on one host), so a new
-- incarnation takes nothing from the one before: an incarnation not seen
-- within the stale-after period, current or previous, has its leases given
-- back and is set to NULL (taken over), as nodes' are.
ALTER TABLE gateway_instances ADD COLUMN incarnation TEXT;
ALTER TABLE gateway_instances ADD COLUMN previous_incarnation TEXT;
ALTER TABLE gateway_instances ADD COLUMN previous_seen_at BIGINT;
