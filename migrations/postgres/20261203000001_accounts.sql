-- People who sign in to the dashboard, their sessions, and organisations' management keys.
-- `role` is `admin` (the whole gateway), `org_admin` (its organisation's keys, members and usage) or
-- `viewer` (read only; the whole gateway when `organization_id` is null). Emails are kept lower-case.
CREATE TABLE admin_accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- argon2id, in the PHC string format.
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    organization_id TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_sign_in_at BIGINT
);
-- A signed-in browser: the cookie's SHA-256 (the cookie itself is never stored) and the CSRF token its
-- state-changing calls must carry. `account_id` is null for a session opened with the master key;
-- `master_digest` is then that key's SHA-256, so a new master key ends the old one's sessions.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT REFERENCES admin_accounts (id) ON DELETE CASCADE,
    master_digest TEXT,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_account ON admin_sessions (account_id);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);
-- An organisation's key for scripts: it creates, lists and revokes that organisation's virtual keys and
-- nothing else. Stored as its SHA-256, like virtual keys.
CREATE TABLE management_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    display_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
