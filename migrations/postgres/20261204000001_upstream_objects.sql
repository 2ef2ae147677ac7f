-- Files and batches made with a provider on a caller's behalf. The upstream account is shared by every
-- organisation, so this table is what says whose each one is: `scope` is the organisation ('' for the
-- master key), `key_id` the key that made it ('' likewise). A batch's output and error files are added
-- under its scope when the batch is read. `object` is the provider's JSON for it as last seen (a file's
-- does not change, so files are listed from here).
CREATE TABLE upstream_objects (
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    scope TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    object TEXT NOT NULL,
    -- A file's purpose (`batch`, `batch_output`, …), '' for a batch: lists filter on it.
    purpose TEXT NOT NULL,
    PRIMARY KEY (kind, provider, id)
);
CREATE INDEX upstream_objects_scope ON upstream_objects (scope, kind, created_at);
