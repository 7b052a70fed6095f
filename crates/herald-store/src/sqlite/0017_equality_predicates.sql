-- The partial indexes of unfinished recipients, their condition written as
-- equalities. SQLite evaluates an IN list of more than two constants with a
-- temporary b-tree, built and dropped each time the condition is evaluated:
-- for every recipient inserted or updated, once per index. With three
-- indexes that was a fifth of the writer's time; the equalities cost a few
-- comparisons. Queries name the same condition (`UNFINISHED`, `PINNED`), or
-- the planner would not see that an index covers them.
DROP INDEX recipients_tenant_due;
CREATE INDEX recipients_tenant_due ON recipients (tenant_id, priority, due_at)
    WHERE (status = 'queued' OR status = 'deferred' OR status = 'sending') AND gateway_id IS NULL;
DROP INDEX recipients_next_due;
CREATE INDEX recipients_next_due ON recipients (due_at, tenant_id)
    WHERE (status = 'queued' OR status = 'deferred' OR status = 'sending') AND gateway_id IS NULL;
DROP INDEX recipients_gateway_due;
CREATE INDEX recipients_gateway_due ON recipients (gateway_id, priority DESC, due_at)
    WHERE (status = 'queued' OR status = 'deferred' OR status = 'sending') AND gateway_id IS NOT NULL;
