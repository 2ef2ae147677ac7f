-- Whether a stream whose provider fails mid-way may continue on the next target (on by default).
ALTER TABLE organizations ADD COLUMN stream_continuation BOOLEAN NOT NULL DEFAULT TRUE;
