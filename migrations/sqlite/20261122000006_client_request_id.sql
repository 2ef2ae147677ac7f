-- The caller's x-request-id, kept beside the gateway's own request id (the ledger's key), so a caller that
-- reuses an id cannot make two requests count as one.
ALTER TABLE usage_events ADD COLUMN client_request_id TEXT;
