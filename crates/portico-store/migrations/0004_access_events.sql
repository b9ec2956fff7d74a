-- The access log, when the `store` sink is on: one row per request, written in batches by
-- the gateway's access-log writer. Analytics read rollups of it, not these rows.
CREATE TABLE access_events (
    -- Milliseconds since the Unix epoch, when the request head arrived.
    at            BIGINT  NOT NULL,
    request_id    TEXT    NOT NULL,
    trace_id      TEXT    NOT NULL,
    client_ip     TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    host          TEXT,
    path          TEXT    NOT NULL,
    path_template TEXT,
    route         TEXT,
    service       TEXT,
    target        TEXT,
    consumer      TEXT,
    status        INTEGER NOT NULL,
    bytes_in      BIGINT  NOT NULL,
    bytes_out     BIGINT  NOT NULL,
    -- Microseconds: the whole request, upstream response heads, Portico's own share.
    duration_us   BIGINT  NOT NULL,
    upstream_us   BIGINT,
    gateway_us    BIGINT  NOT NULL,
    retries       INTEGER NOT NULL,
    error         TEXT
);
CREATE INDEX access_events_at ON access_events (at);
