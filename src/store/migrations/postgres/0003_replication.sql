-- Facts about this store: its own id (so an edge can tell that its master's
-- database was replaced) and, on an edge, the id of the store it replicates.
CREATE TABLE store_info (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Events recorded at an edge (its log, with the synced flag) or collected
-- by the master (every row synced). `id` makes them idempotent.
CREATE TABLE events (
    seq       BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id        TEXT    NOT NULL UNIQUE,
    edge_id   TEXT    NOT NULL,
    at_ms     BIGINT  NOT NULL,
    module_id TEXT,
    kind      TEXT    NOT NULL,
    key       TEXT,
    epoch     BIGINT,
    body      TEXT    NOT NULL,
    synced    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_unsynced ON events (synced, seq);
CREATE INDEX events_coalesce ON events (module_id, key) WHERE NOT synced AND kind = 'status';

-- Master: where passive sync got to in each edge's log.
CREATE TABLE sync_progress (
    edge_id  TEXT   PRIMARY KEY NOT NULL,
    last_seq BIGINT NOT NULL
);

INSERT INTO outpost_meta (key, value) VALUES ('events_dropped', 0);
