-- What each AI budget has spent in its period, saved every few seconds by each node so that
-- a restart does not forget it. (With Redis, Redis holds the cluster's figure; these rows
-- only seed a node that starts.)
CREATE TABLE ai_budget_spend (
    -- The budget, what it counts and its period (`name|subject|period`).
    budget TEXT   NOT NULL,
    -- The period's start, in seconds since the Unix epoch.
    period BIGINT NOT NULL,
    -- Billionths of a US dollar, and tokens.
    nanos  BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (budget, period)
);
