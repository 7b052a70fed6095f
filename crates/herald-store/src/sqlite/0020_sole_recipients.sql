-- Whether a recipient is its message's only one. The first outcome of such
-- a recipient (its first claim) writes its message's webhook events without
-- reading the message's recipients or the outbox: the message has no event
-- yet, and its state is that outcome. Rows stored before are 0, so their
-- outcomes' events are read as before.
ALTER TABLE recipients ADD COLUMN sole INTEGER NOT NULL DEFAULT 0;
