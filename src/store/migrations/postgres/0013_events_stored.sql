-- Master: when the master stored each collected event, by its own clock.
-- Retention by age counts from here, never from `at_ms`: that is the
-- edge's wall clock, and an edge set to 1970 had its events deleted by the
-- next prune, right after they were stored (one set years ahead kept them
-- for good). NULL in an edge's own log, which is not pruned by age.
-- Rows stored before this column existed have only the edge's stamp.
ALTER TABLE events ADD COLUMN stored_ms BIGINT;
UPDATE events SET stored_ms = at_ms;
-- The prune (`PRUNE_OLD_EVENTS`) walks this range oldest first and stops
-- at its batch, instead of scanning the whole table every hour.
CREATE INDEX events_stored ON events (stored_ms) WHERE stored_ms IS NOT NULL;
