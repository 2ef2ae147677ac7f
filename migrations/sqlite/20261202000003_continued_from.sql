-- A stream continued on another target after its provider failed mid-way: the earlier attempts, each with
-- its own tokens and cost (JSON); the row's totals include them. NULL for a request served by one attempt.
ALTER TABLE usage_events ADD COLUMN continued_from TEXT;
