-- The outbox's rows no longer refer to their webhook through a foreign key:
-- its check ran for every event written (a quarter of an insert's cost),
-- while the rows are already safe without it. Whatever writes a webhook's
-- events holds the webhook's row (outcomes FOR SHARE, test deliveries FOR
-- KEY SHARE) until its commit, so a webhook being deleted waits for them,
-- and its deletion removes its events after its own row, seeing every
-- event committed before it.
ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_webhook_id_fkey;
