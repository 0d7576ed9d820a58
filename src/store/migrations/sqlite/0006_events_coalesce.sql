-- The coalescing lookup says `NOT synced` (the text both backends share);
-- SQLite uses a partial index only when the query's terms match the
-- index's, so `synced = 0` here made every status change scan the log.
DROP INDEX events_coalesce;
CREATE INDEX events_coalesce ON events (module_id, key) WHERE NOT synced AND kind = 'status';
