-- Crash recovery: a lease names the process (incarnation) that holds it, and
-- a node's heartbeat names its current process, so that a restarted node can
-- give back its earlier processes' leases and any node those of a node whose
-- heartbeat stopped.
ALTER TABLE recipients ADD COLUMN lease_incarnation TEXT;
ALTER TABLE nodes ADD COLUMN incarnation TEXT;
