-- A rotated secret's previous link key keeps authenticating until
-- `prev_until_ms` (the rotation grace); NULL: no grace.
ALTER TABLE credentials ADD COLUMN prev_link_key BYTEA;
ALTER TABLE credentials ADD COLUMN prev_until_ms BIGINT;
-- Bumped by every credential write or delete, in the same transaction, so a
-- running master sees changes made by another process with one cheap read.
INSERT INTO outpost_meta (key, value) VALUES ('credentials', 0);
-- The credential audit log: creations, rotations, deletions.
CREATE TABLE credential_log (
    seq     BIGSERIAL PRIMARY KEY,
    edge_id TEXT      NOT NULL,
    at_ms   BIGINT    NOT NULL,
    action  TEXT      NOT NULL
);
CREATE INDEX credential_log_edge ON credential_log (edge_id, seq);
