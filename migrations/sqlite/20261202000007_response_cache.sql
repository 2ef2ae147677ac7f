-- An organisation's opt-in to the response cache: the seconds an answer is kept (NULL: not cached).
ALTER TABLE organizations ADD COLUMN response_cache_ttl_seconds BIGINT;
