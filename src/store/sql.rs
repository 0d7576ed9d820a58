//! The SQL text of the store. Both backends accept `$N` placeholders and the
//! same statements; only the migrations differ.

pub const DOC_COLUMNS: &str = "id, kind, rev, seq, deleted, owner, body";

/// Takes a block of sequence numbers; returns the last of the block. The
/// row lock it takes is what orders commits (see the module docs).
pub const BUMP_SEQ: &str =
    "UPDATE outpost_meta SET value = value + $1 WHERE key = 'seq' RETURNING value";

/// Creates a document, or revives a tombstone; returns nothing when a live
/// document with that id exists.
pub const INSERT_DOC: &str = "INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) \
     VALUES ($1, $2, 1, $3, FALSE, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = documents.rev + 1, \
     seq = excluded.seq, deleted = FALSE, owner = excluded.owner, body = excluded.body \
     WHERE documents.deleted \
     RETURNING rev";

pub const UPDATE_DOC: &str = "UPDATE documents SET rev = rev + 1, seq = $3, owner = $4, body = $5 \
     WHERE id = $1 AND kind = $2 AND rev = $6 AND NOT deleted \
     RETURNING rev";

pub const DELETE_DOC: &str = "UPDATE documents SET rev = rev + 1, seq = $2, deleted = TRUE, \
     owner = NULL, body = 'null' \
     WHERE id = $1 AND rev = $3 AND NOT deleted \
     RETURNING rev";

pub const CURRENT_REV: &str = "SELECT rev, deleted FROM documents WHERE id = $1";

pub const DELETE_REFS: &str = "DELETE FROM doc_refs WHERE from_id = $1";

pub const UPSERT_CREDENTIAL: &str = "INSERT INTO credentials (id, link_key, updated_ms) \
     VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET link_key = excluded.link_key, updated_ms = excluded.updated_ms";
pub const GET_CREDENTIAL: &str = "SELECT link_key FROM credentials WHERE id = $1";

pub const GET_DOC: &str =
    "SELECT id, kind, rev, seq, deleted, owner, body FROM documents WHERE id = $1";

pub const LIST_KIND: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND id > $2 AND NOT deleted ORDER BY id LIMIT $3";

pub const LIST_ALL: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND NOT deleted ORDER BY id";

pub const BY_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner = $2 AND NOT deleted ORDER BY id";

pub const WITH_ANY_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner IS NOT NULL AND NOT deleted ORDER BY id";

pub const WITHOUT_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner IS NULL AND NOT deleted ORDER BY id";

pub const REFERENCING: &str = "SELECT d.id, d.kind, d.rev, d.seq, d.deleted, d.owner, d.body \
     FROM doc_refs r JOIN documents d ON d.id = r.from_id \
     WHERE r.to_id = $1 AND d.kind = $2 AND NOT d.deleted ORDER BY d.id";

pub const CHANGES_SINCE: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

pub const INIT_STORE_ID: &str =
    "INSERT INTO store_info (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING";
pub const GET_STORE_ID: &str = "SELECT value FROM store_info WHERE key = 'store_id'";

pub const LAST_SEQ: &str = "SELECT value FROM outpost_meta WHERE key = 'seq'";

pub const COUNT_KIND: &str = "SELECT COUNT(*) FROM documents WHERE kind = $1 AND NOT deleted";

/// `INSERT … VALUES (…), (…) … RETURNING id, rev` for `n` new documents:
/// [`INSERT_DOC`] for many rows at once (5 parameters per row).
pub fn insert_docs(n: usize) -> String {
    let mut s =
        String::from("INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) VALUES ");
    for i in 0..n {
        let p = i * 5;
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!(
            "(${}, ${}, 1, ${}, FALSE, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
    }
    s.push_str(
        " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = documents.rev + 1, \
         seq = excluded.seq, deleted = FALSE, owner = excluded.owner, body = excluded.body \
         WHERE documents.deleted RETURNING id, rev",
    );
    s
}

/// `INSERT INTO doc_refs … VALUES ($1, $2), ($1, $3), …` for `n` targets.
pub fn insert_refs(n: usize) -> String {
    let mut s = String::from("INSERT INTO doc_refs (from_id, to_id) VALUES ");
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("($1, ${})", i + 2));
    }
    s
}

/// `SELECT … WHERE id IN ($1, …, $n)` for `n` ids.
pub fn get_many(n: usize) -> String {
    let mut s = format!("SELECT {DOC_COLUMNS} FROM documents WHERE NOT deleted AND id IN (");
    for i in 1..=n {
        if i > 1 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&i.to_string());
    }
    s.push(')');
    s
}
