-- Per-key limits; a null falls back to the key's plan.
ALTER TABLE api_keys ADD COLUMN daily_prompt_quota BIGINT;
ALTER TABLE api_keys ADD COLUMN monthly_prompt_quota BIGINT;
ALTER TABLE api_keys ADD COLUMN rpm_limit BIGINT;
ALTER TABLE api_keys ADD COLUMN tpm_limit BIGINT;
ALTER TABLE api_keys ADD COLUMN max_parallel BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_micros BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_period TEXT;
