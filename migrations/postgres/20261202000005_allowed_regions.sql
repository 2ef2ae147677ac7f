-- The regions an organisation's traffic may go to, a JSON array of names (global only by default).
ALTER TABLE organizations ADD COLUMN allowed_regions TEXT NOT NULL DEFAULT '["global"]';
