-- An organisation's opt-in to the response cache: the seconds an answer is kept (NULL: not cached).
ALTER TABLE organizations ADD COLUMN response_cache_ttl_seconds BIGINT;
-- A key's own opt-in, which wins over its organisation's.
ALTER TABLE api_keys ADD COLUMN response_cache_ttl_seconds BIGINT;
