-- Regeneration with a grace period: the old secret keeps working until previous_expires_at.
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_expires_at BIGINT;
