-- The usage ledger: exactly one row per request id, whatever happened to the request.
CREATE TABLE usage_events (
    request_id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    organization_id TEXT,
    key_id TEXT,
    requested_model TEXT NOT NULL,
    served_model TEXT,
    provider TEXT,
    attempts INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    usage_source TEXT NOT NULL,
    cost_micros BIGINT,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    error TEXT,
    prompt_counted INTEGER NOT NULL
);

CREATE INDEX usage_events_key_time ON usage_events (key_id, created_at);
CREATE INDEX usage_events_org_time ON usage_events (organization_id, created_at);
