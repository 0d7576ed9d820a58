-- Who controls each edge location, and the epoch that goes up at every change.
CREATE TABLE control_state (
    edge_id    TEXT    PRIMARY KEY NOT NULL,
    controller TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    since_ms   INTEGER NOT NULL
) WITHOUT ROWID;

-- Every change of controller (the history of active instances).
CREATE TABLE control_log (
    id        TEXT    PRIMARY KEY NOT NULL,
    edge_id   TEXT    NOT NULL,
    epoch     INTEGER NOT NULL,
    from_side TEXT,
    to_side   TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX control_log_edge_epoch ON control_log (edge_id, epoch);
