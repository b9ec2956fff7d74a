-- Portico's first schema. It is written in the SQL that SQLite and PostgreSQL share, so one
-- set of migrations serves both backends.

-- The revision counts committed changes; every write transaction bumps it first, which also
-- serialises writers on both backends.
CREATE TABLE portico_revision (
    id       INTEGER PRIMARY KEY,
    revision BIGINT  NOT NULL
);
INSERT INTO portico_revision (id, revision) VALUES (1, 0);

-- Configuration entities (services, routes, ...) as validated JSON documents. The model crate
-- owns their shape; the store owns versions and timestamps.
CREATE TABLE entities (
    kind       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    spec       TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Admin API tokens. Only a SHA-256 of each token is kept: the token itself is shown once.
CREATE TABLE admin_tokens (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL,
    hash       TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
