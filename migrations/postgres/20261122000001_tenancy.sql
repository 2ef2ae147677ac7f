-- Organisations, plans and virtual keys. Times are Unix milliseconds; money is integer micro-USD.
CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    blocked_providers TEXT NOT NULL DEFAULT '[]',
    allow_cheaper_swaps BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    public_alias TEXT,
    daily_prompt_quota BIGINT,
    monthly_prompt_quota BIGINT,
    monthly_token_allowance BIGINT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel BIGINT,
    budget_micros BIGINT,
    budget_period TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    display_prefix TEXT NOT NULL,
    plan TEXT NOT NULL REFERENCES plans (name),
    status TEXT NOT NULL,
    expires_at BIGINT,
    models TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_organization ON api_keys (organization_id);
