-- The process (incarnation) of each gateway instance that reported last. An
-- instance that reports with a new one gets its earlier processes' leases
-- back; an instance not seen within the stale-after period has the leases
-- of this one given back and it set to NULL (taken over), as nodes' are.
ALTER TABLE gateway_instances ADD COLUMN incarnation TEXT;
