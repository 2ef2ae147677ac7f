-- Stored responses of the Responses API, scoped to the organisation that made them ('' for the master
-- key), expiring after the configured retention. `input` is the turn's input items (references
-- resolved), `output` its output items as the provider gave them (encrypted reasoning included, for the
-- next turn), `body` the response object as it was returned to the caller.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    key_id TEXT,
    -- The provider that answered: encrypted reasoning in the output goes back to it only.
    provider TEXT,
    previous_response_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX responses_expires_at ON responses (expires_at);

-- Every item of a stored response that has an id (input and output), for `item_reference`.
CREATE TABLE response_items (
    scope TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, item_id)
);
CREATE INDEX response_items_response_id ON response_items (response_id);
CREATE INDEX response_items_expires_at ON response_items (expires_at);
