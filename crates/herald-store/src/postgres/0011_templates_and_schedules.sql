-- Templates, scheduled messages and recurring schedules.

-- A tenant's template at its current version; every version (this one
-- included) is kept in template_versions.
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    version INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE template_versions (
    template_id TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    subject TEXT NOT NULL,
    text_body TEXT,
    html_body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);

-- A scheduled message's recipients are stored queued, due at send_at. The
-- template a message was rendered from is kept by id and version (no
-- foreign key: deleting a template leaves its messages as they are).
ALTER TABLE messages ADD COLUMN send_at BIGINT, ADD COLUMN template_id TEXT, ADD COLUMN template_version INTEGER;

-- A recurring schedule. next_run_at is the occurrence it fires next (NULL
-- while disabled); a firing moves it on in the transaction that records the
-- firing and stores its message, only while it still holds the value the
-- firing consumed.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    template_id TEXT NOT NULL REFERENCES templates (id),
    data JSONB NOT NULL,
    header_to JSONB NOT NULL,
    header_cc JSONB NOT NULL,
    bcc JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    next_run_at BIGINT,
    last_run_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;
CREATE INDEX schedules_by_template ON schedules (template_id);

-- One firing of a schedule. A scheduled firing is unique per schedule and
-- occurrence (fire_at); missed counts the occurrences a catch-up folded in.
CREATE TABLE schedule_runs (
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    cause TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    missed INTEGER NOT NULL DEFAULT 0,
    message_id TEXT,
    error TEXT,
    node TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX schedule_runs_once ON schedule_runs (schedule_id, fire_at) WHERE cause = 'schedule';
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule_id, created_at);
