-- A master cluster on this database (PostgreSQL only: the lease is judged
-- by the server's clock, which a SQLite file shared by two processes on one
-- host does not need; those use a lock file instead).

-- The one lease: who holds it, until when (the server's clock), and the
-- fencing term, raised at every grant.
CREATE TABLE cluster_lease (
    id         INT         PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    term       BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO cluster_lease (id, holder, term, expires_at) VALUES (1, NULL, 0, 'epoch');

-- Every node's heartbeat, for /ha/states and the priority rule.
CREATE TABLE cluster_nodes (
    node_id  TEXT        PRIMARY KEY NOT NULL,
    state    TEXT        NOT NULL,
    priority INT         NOT NULL,
    preempt  BOOLEAN     NOT NULL,
    api      TEXT,
    link     TEXT,
    seen_at  TIMESTAMPTZ NOT NULL
);

-- Every change of MASTER.
CREATE TABLE cluster_history (
    id      BIGSERIAL   PRIMARY KEY,
    node_id TEXT        NOT NULL,
    term    BIGINT      NOT NULL,
    reason  TEXT        NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
