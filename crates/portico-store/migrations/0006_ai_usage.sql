-- What AI calls use and cost: per request in the access log, summed in the rollups.
-- Input tokens count every input token, those read from or written to a prompt cache
-- included; output tokens include reasoning. Costs in the rollups are whole billionths of
-- a US dollar, so that sums are exact.
ALTER TABLE access_events ADD COLUMN team TEXT;
ALTER TABLE access_events ADD COLUMN ai_provider TEXT;
ALTER TABLE access_events ADD COLUMN ai_model TEXT;
ALTER TABLE access_events ADD COLUMN input_tokens BIGINT;
ALTER TABLE access_events ADD COLUMN output_tokens BIGINT;
ALTER TABLE access_events ADD COLUMN cached_read_tokens BIGINT;
ALTER TABLE access_events ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE access_events ADD COLUMN reasoning_tokens BIGINT;
-- 1 when the provider reported no usage and the counts are an estimate, else 0.
ALTER TABLE access_events ADD COLUMN usage_estimated INTEGER;
-- US dollars; NULL for a model without a price.
ALTER TABLE access_events ADD COLUMN cost_usd DOUBLE PRECISION;

ALTER TABLE traffic_rollups ADD COLUMN ai_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN cached_read_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN cost_nanos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN unpriced_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_rollups ADD COLUMN estimated_calls BIGINT NOT NULL DEFAULT 0;
