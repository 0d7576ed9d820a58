-- Credentials carry a revision, as documents do, so that a write states
-- what it expects to replace instead of overwriting silently.
ALTER TABLE credentials ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
