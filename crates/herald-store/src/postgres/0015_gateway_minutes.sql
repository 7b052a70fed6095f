-- Each gateway instance's outcomes per minute, kept for an hour: the
-- gateways list shows what an instance delivered and failed in the last
-- hour, to the minute. They replace the counts of a "current hour" that
-- started at the first outcome after the previous one ended (hour_start,
-- delivered, failed), which showed an hour long gone until the next outcome.
CREATE TABLE gateway_instance_minutes (
    gateway_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Unix milliseconds divided by 60,000.
    minute BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, name, minute),
    FOREIGN KEY (gateway_id, name) REFERENCES gateway_instances (gateway_id, name)
        ON DELETE CASCADE
);
INSERT INTO gateway_instance_minutes (gateway_id, name, minute, delivered, failed)
    SELECT gateway_id, name, hour_start / 60000, delivered, failed FROM gateway_instances
    WHERE delivered > 0 OR failed > 0;
ALTER TABLE gateway_instances DROP COLUMN hour_start;
ALTER TABLE gateway_instances DROP COLUMN delivered;
ALTER TABLE gateway_instances DROP COLUMN failed;
