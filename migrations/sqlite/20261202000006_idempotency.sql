-- Idempotency-Key: the first request with a key claims it (the primary key decides between replicas),
-- and its answer is kept for the repeats of the same API key for 24 hours. `fingerprint` is a hash of
-- the route and the body (a repeat with another body is refused); `state` is `running` while the first
-- request runs, `done` once its answer is kept, `too_large` when the answer was too large to keep.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- The claiming request's own token: only it keeps its answer or gives the claim up.
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    status BIGINT,
    headers TEXT,
    body TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
