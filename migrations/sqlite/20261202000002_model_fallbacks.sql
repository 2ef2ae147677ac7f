-- Whether a plain model name may be answered by the next model of its fallback chain (on by default).
ALTER TABLE organizations ADD COLUMN model_fallbacks INTEGER NOT NULL DEFAULT 1;
