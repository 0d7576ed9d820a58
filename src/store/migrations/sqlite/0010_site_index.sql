-- A site's systems in id order (`store/scope.rs`, `SITE_PAGE`): with the id
-- in the index, a page of one owner's systems after a cursor is a range of
-- the index, not a walk of every system. It covers what the (kind, owner)
-- index answered, which goes.
CREATE INDEX documents_kind_owner_id ON documents (kind, owner, id) WHERE owner IS NOT NULL;
DROP INDEX documents_kind_owner;
