-- Traffic analytics: per node, the requests of each minute, hour and day, by dimension
-- (all, route, service, consumer, status, error) and key. Each node rewrites its own rows
-- of the buckets still open; queries add up the rows of every node.
CREATE TABLE traffic_rollups (
    -- The bucket's length in seconds: 60, 3600 or 86400.
    interval_secs INTEGER NOT NULL,
    -- The bucket's start, in seconds since the Unix epoch.
    bucket        BIGINT  NOT NULL,
    dimension     TEXT    NOT NULL,
    -- The route, service or consumer name, the status code or error kind ('' for all).
    key           TEXT    NOT NULL,
    node          TEXT    NOT NULL,
    requests      BIGINT  NOT NULL,
    client_errors BIGINT  NOT NULL,
    server_errors BIGINT  NOT NULL,
    bytes_in      BIGINT  NOT NULL,
    bytes_out     BIGINT  NOT NULL,
    -- Latencies in milliseconds, as a DDSketch in DataDog's binary encoding.
    latency       BYTEA   NOT NULL,
    PRIMARY KEY (interval_secs, dimension, bucket, key, node)
);
