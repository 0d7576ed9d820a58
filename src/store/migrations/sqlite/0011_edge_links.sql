-- The edges whose site a master held while their link to it was up, and
-- which node that was. A master that starts or is promoted does not run
-- such a site at once: when that link ended the edge ran its site on its
-- own, so the master waits for it to reconnect (or for its failover
-- timeout). One row per edge: a reconnect replaces it, a loss deletes it.
CREATE TABLE edge_links (
    edge_id  TEXT   PRIMARY KEY NOT NULL,
    node_id  TEXT   NOT NULL,
    since_ms BIGINT NOT NULL
);
