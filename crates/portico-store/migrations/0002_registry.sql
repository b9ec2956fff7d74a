-- The service registry: instances that registered themselves, each alive until its
-- heartbeats stop for longer than its TTL. Instances are run-time state, not configuration:
-- changing them does not bump the revision.
CREATE TABLE registry_instances (
    service       TEXT   NOT NULL,
    id            TEXT   NOT NULL,
    address       TEXT   NOT NULL,
    weight        BIGINT NOT NULL,
    ttl_ms        BIGINT NOT NULL,
    -- Milliseconds since the Unix epoch.
    expires_at    BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    PRIMARY KEY (service, id)
);
CREATE UNIQUE INDEX registry_instances_address ON registry_instances (service, address);

-- What a token may do: `admin` (everything) or `registry` (register and heartbeat only).
ALTER TABLE admin_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
