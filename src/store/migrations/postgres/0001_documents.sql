-- Documents: every kind in one table. `seq` is assigned at commit from the
-- single counter row in outpost_meta: the row lock taken by the increment is
-- held until commit, so sequence numbers become visible in order and a feed
-- reader can never pass a number that commits later.
CREATE TABLE documents (
    id       TEXT    PRIMARY KEY NOT NULL,
    kind     TEXT    NOT NULL,
    rev      BIGINT  NOT NULL,
    seq      BIGINT  NOT NULL,
    deleted  BOOLEAN NOT NULL DEFAULT FALSE,
    owner    TEXT,
    body     TEXT    NOT NULL
);
CREATE UNIQUE INDEX documents_seq ON documents (seq);
CREATE INDEX documents_kind_id ON documents (kind, id);
CREATE INDEX documents_kind_owner ON documents (kind, owner) WHERE owner IS NOT NULL;

CREATE TABLE doc_refs (
    from_id TEXT NOT NULL,
    to_id   TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id)
);
CREATE INDEX doc_refs_to ON doc_refs (to_id);

-- Link keys derived from edge secrets. Not part of the change feed: never
-- replicated to edges.
CREATE TABLE credentials (
    id         TEXT   PRIMARY KEY NOT NULL,
    link_key   BYTEA  NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE outpost_meta (
    key   TEXT   PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO outpost_meta (key, value) VALUES ('seq', 0);
