-- Master: the secret from which every master on this database derives its
-- TLS session-ticket keys, so an edge resumes its session on a restarted
-- master or on the next MASTER of a cluster (`link/tickets.rs`). One row,
-- made by the first master that needs it. Not part of the change feed.
CREATE TABLE link_ticket_secret (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    secret BLOB    NOT NULL
);
