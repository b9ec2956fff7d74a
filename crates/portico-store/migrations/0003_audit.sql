-- The audit log: every change made through the admin API or `portico apply`, with who made
-- it and the entity before and after (secrets redacted). Admin-token changes are recorded
-- too; they have no revision.
CREATE TABLE audit_log (
    id         TEXT   PRIMARY KEY,
    -- Milliseconds since the Unix epoch.
    at         BIGINT NOT NULL,
    revision   BIGINT,
    actor_id   TEXT   NOT NULL,
    actor_name TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    before     TEXT,
    after      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
