-- Documents: every kind in one table. `seq` is assigned at commit from the
-- single counter row in outpost_meta, so feed order is commit order. `seq`
-- is the rowid: a change-feed scan is a range scan of the table itself.
CREATE TABLE documents (
    seq      INTEGER PRIMARY KEY NOT NULL,
    id       TEXT    NOT NULL UNIQUE,
    kind     TEXT    NOT NULL,
    rev      INTEGER NOT NULL,
    deleted  INTEGER NOT NULL DEFAULT 0,
    owner    TEXT,
    body     TEXT    NOT NULL
);
CREATE INDEX documents_kind_id ON documents (kind, id);
CREATE INDEX documents_kind_owner ON documents (kind, owner) WHERE owner IS NOT NULL;

-- Which documents a document refers to (a system's modules).
CREATE TABLE doc_refs (
    from_id TEXT NOT NULL,
    to_id   TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id)
) WITHOUT ROWID;
CREATE INDEX doc_refs_to ON doc_refs (to_id);

-- Link keys derived from edge secrets. Not part of the change feed: never
-- replicated to edges.
CREATE TABLE credentials (
    id         TEXT    PRIMARY KEY NOT NULL,
    link_key   BLOB    NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE outpost_meta (
    key   TEXT    PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO outpost_meta (key, value) VALUES ('seq', 0);
