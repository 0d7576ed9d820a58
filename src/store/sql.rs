//! The SQL text of the store. Both backends accept `$N` placeholders and the
//! same statements; only the migrations differ. Statements with a variable
//! number of rows are built with [`values`] and [`id_list`], which number the
//! placeholders the way each backend binds fastest.

use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

/// Takes a block of sequence numbers; returns the last of the block. The
/// row lock it takes is what orders commits (see the module docs).
pub(crate) const BUMP_SEQ: &str =
    "UPDATE outpost_meta SET value = value + $1 WHERE key = 'seq' RETURNING value";

/// Creates a document, or revives a tombstone; returns nothing when a live
/// document with that id exists.
pub(crate) const INSERT_DOC: &str = "INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) \
     VALUES ($1, $2, 1, $3, FALSE, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = documents.rev + 1, \
     seq = excluded.seq, deleted = FALSE, owner = excluded.owner, body = excluded.body \
     WHERE documents.deleted \
     RETURNING rev";

pub(crate) const UPDATE_DOC: &str = "UPDATE documents SET rev = rev + 1, seq = $3, owner = $4, body = $5 \
     WHERE id = $1 AND kind = $2 AND rev = $6 AND NOT deleted \
     RETURNING rev";

pub(crate) const DELETE_DOC: &str = "UPDATE documents SET rev = rev + 1, seq = $2, deleted = TRUE, \
     owner = NULL, body = 'null' \
     WHERE id = $1 AND rev = $3 AND NOT deleted \
     RETURNING rev";

pub(crate) const CURRENT_REV: &str = "SELECT rev, deleted FROM documents WHERE id = $1";

pub(crate) const DELETE_REFS: &str = "DELETE FROM doc_refs WHERE from_id = $1";

pub(crate) const GET_DOC: &str =
    "SELECT id, kind, rev, seq, deleted, owner, body FROM documents WHERE id = $1";

pub(crate) const LIST_KIND: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND id > $2 AND NOT deleted ORDER BY id LIMIT $3";

pub(crate) const LIST_ALL: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND NOT deleted ORDER BY id";

pub(crate) const BY_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner = $2 AND NOT deleted ORDER BY id";

pub(crate) const WITH_ANY_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner IS NOT NULL AND NOT deleted ORDER BY id";

pub(crate) const WITHOUT_OWNER: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE kind = $1 AND owner IS NULL AND NOT deleted ORDER BY id";

pub(crate) const REFERENCING: &str = "SELECT d.id, d.kind, d.rev, d.seq, d.deleted, d.owner, d.body \
     FROM doc_refs r JOIN documents d ON d.id = r.from_id \
     WHERE r.to_id = $1 AND d.kind = $2 AND NOT d.deleted ORDER BY d.id";

/// The owners of the live systems listing a module (`store/scope.rs`).
pub(crate) const MODULE_OWNERS: &str = "SELECT d.owner FROM doc_refs r JOIN documents d ON d.id = r.from_id \
     WHERE r.to_id = $1 AND d.kind = $2 AND NOT d.deleted";

/// The owner of a live system (`store/scope.rs`).
pub(crate) const SYSTEM_OWNER: &str =
    "SELECT owner FROM documents WHERE id = $1 AND kind = $2 AND NOT deleted";

/// The documents of one edge's site (`store/scope.rs`): `$1` the location,
/// `$2` the location kind, `$3` the system kind. Each branch is an indexed
/// lookup (by id; by kind and owner; the systems' references), so the
/// statement reads the site and nothing else, whatever the store's size.
macro_rules! site_union {
    ($cols:literal, $mcols:literal) => {
        concat!(
            "SELECT ",
            $cols,
            " FROM documents WHERE id = $1 AND kind = $2 AND NOT deleted \
             UNION ALL SELECT ",
            $cols,
            " FROM documents WHERE kind = $3 AND owner = $1 AND NOT deleted \
             UNION ALL SELECT ",
            $mcols,
            " FROM documents s JOIN doc_refs r ON r.from_id = s.id \
             JOIN documents m ON m.id = r.to_id \
             WHERE s.kind = $3 AND s.owner = $1 AND NOT s.deleted AND NOT m.deleted"
        )
    };
}

/// Ids of a site's documents (a module listed twice comes twice).
pub(crate) const SITE_IDS: &str = site_union!("id", "m.id");

/// A page of a site's documents after id `$4`, at most `$5`, in id order.
pub(crate) const SITE_PAGE: &str = concat!(
    "SELECT id, kind, rev, seq, deleted, owner, body FROM (",
    site_union!(
        "id, kind, rev, seq, deleted, owner, body",
        "m.id, m.kind, m.rev, m.seq, m.deleted, m.owner, m.body"
    ),
    ") site WHERE id > $4 ORDER BY id LIMIT $5"
);

/// What documents referred to before a write, for [`id_list`].
pub(crate) const REFS_FROM_HEAD: &str = "SELECT to_id FROM doc_refs WHERE from_id IN ";

/// Gives a live document a new sequence number, its body unchanged: its
/// site changed with a document that refers to it, and every edge whose
/// checkpoint is past it must see it again.
pub(crate) const RESTAMP_DOC: &str = "UPDATE documents SET seq = $1 WHERE id = $2 AND NOT deleted";

pub(crate) const CHANGES_SINCE: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM documents \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

pub(crate) const INIT_STORE_ID: &str =
    "INSERT INTO store_info (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING";
pub(crate) const GET_STORE_ID: &str = "SELECT value FROM store_info WHERE key = 'store_id'";

pub(crate) const LAST_SEQ: &str = "SELECT value FROM outpost_meta WHERE key = 'seq'";

pub(crate) const COUNT_KIND: &str =
    "SELECT COUNT(*) FROM documents WHERE kind = $1 AND NOT deleted";

/// `CREATE SCHEMA` for a PostgreSQL schema name already checked to be
/// lower-case letters, digits and `_`.
pub(crate) fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {schema}")
}

// Multi-row statements.

/// `head VALUES (…), (…) tail`, one tuple per row, each filled by `push_row`.
/// The caller keeps a statement's parameters within both backends' limits
/// (SQLite 32,766, PostgreSQL 65,535) by chunking its rows. On SQLite the
/// builder writes anonymous `?` placeholders, which bind by position; `$N`
/// ones are looked up by name, a walk of the statement's parameter list per
/// parameter that made big hand-numbered statements quadratic.
pub(crate) fn values<DB, I, F>(head: &str, rows: I, push_row: F, tail: &str) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    I: IntoIterator,
    F: FnMut(Separated<'_, DB, &'static str>, I::Item),
{
    let mut q = QueryBuilder::new(head);
    q.push_values(rows, push_row);
    q.push(tail);
    q
}

/// `head (id, id, …)`: the ids as text, one parameter each.
pub(crate) fn id_list<DB>(head: &str, ids: &[Uuid]) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(head);
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    list.push_unseparated(")");
    q
}

/// New documents, for [`values`]: [`INSERT_DOC`] for many rows at once.
pub(crate) const INSERT_DOCS_HEAD: &str =
    "INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) ";
pub(crate) const INSERT_DOCS_TAIL: &str = " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = documents.rev + 1, \
     seq = excluded.seq, deleted = FALSE, owner = excluded.owner, body = excluded.body \
     WHERE documents.deleted RETURNING id, rev";

/// Reference index rows `(from_id, to_id)`, for [`values`].
pub(crate) const INSERT_REFS_HEAD: &str = "INSERT INTO doc_refs (from_id, to_id) ";

/// Live documents by id, for [`id_list`].
pub(crate) const GET_MANY_HEAD: &str =
    "SELECT id, kind, rev, seq, deleted, owner, body FROM documents WHERE NOT deleted AND id IN ";

// Edge credentials (not part of the change feed). Each has a revision, as
// documents do, so a write states what it expects to replace.

/// Creates a credential; returns nothing when one exists.
pub(crate) const INSERT_CREDENTIAL: &str = "INSERT INTO credentials (id, link_key, updated_ms, rev) \
     VALUES ($1, $2, $3, 1) ON CONFLICT (id) DO NOTHING RETURNING rev";
/// Replaces a credential at the expected revision.
/// With `$5` (the end of the rotation grace), the key replaced is kept as
/// the previous one until then; without, no previous key authenticates.
pub(crate) const UPDATE_CREDENTIAL: &str = "UPDATE credentials SET link_key = $2, updated_ms = $3, rev = rev + 1, \
     prev_link_key = CASE WHEN $5 IS NULL THEN NULL ELSE link_key END, prev_until_ms = $5 \
     WHERE id = $1 AND rev = $4 RETURNING rev";
pub(crate) const CREDENTIAL_REV: &str = "SELECT rev FROM credentials WHERE id = $1";
/// A deleted edge location's key authenticates nothing any more.
pub(crate) const DELETE_CREDENTIAL: &str = "DELETE FROM credentials WHERE id = $1";
pub(crate) const GET_CREDENTIAL: &str = "SELECT link_key FROM credentials WHERE id = $1";
/// An edge's current and previous keys, only while its location exists.
pub(crate) const EDGE_KEYS: &str = "SELECT c.link_key, c.prev_link_key, c.prev_until_ms \
     FROM credentials c JOIN documents d ON d.id = c.id \
     WHERE c.id = $1 AND d.kind = $2 AND NOT d.deleted";
pub(crate) const CREDENTIAL_REVS: &str = "SELECT id, rev FROM credentials";
/// Every credential write or delete bumps this counter in its transaction.
pub(crate) const BUMP_CREDENTIALS: &str =
    "UPDATE outpost_meta SET value = value + 1 WHERE key = 'credentials'";
pub(crate) const CREDENTIALS_VERSION: &str =
    "SELECT value FROM outpost_meta WHERE key = 'credentials'";
pub(crate) const INSERT_CREDENTIAL_LOG: &str =
    "INSERT INTO credential_log (edge_id, at_ms, action) VALUES ($1, $2, $3)";
pub(crate) const CREDENTIAL_LOG: &str = "SELECT at_ms, action FROM credential_log \
     WHERE edge_id = $1 ORDER BY seq DESC LIMIT $2";

// Control state and the control audit log (`store/control.rs`).

pub(crate) const GET_STATE: &str =
    "SELECT edge_id, controller, epoch, since_ms FROM control_state WHERE edge_id = $1";
pub(crate) const ALL_STATES: &str =
    "SELECT edge_id, controller, epoch, since_ms FROM control_state ORDER BY edge_id";
pub(crate) const INSERT_STATE: &str = "INSERT INTO control_state (edge_id, controller, epoch, since_ms) \
     VALUES ($1, $2, 1, $3) ON CONFLICT (edge_id) DO NOTHING RETURNING epoch";
pub(crate) const UPDATE_STATE: &str = "UPDATE control_state SET controller = $2, epoch = epoch + 1, since_ms = $3 \
     WHERE edge_id = $1 AND epoch = $4 RETURNING epoch";
pub(crate) const INSERT_LOG: &str = "INSERT INTO control_log (id, edge_id, epoch, from_side, to_side, reason, at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const ADOPT_STATE: &str = "INSERT INTO control_state (edge_id, controller, epoch, since_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (edge_id) DO UPDATE \
     SET controller = excluded.controller, epoch = excluded.epoch, since_ms = excluded.since_ms \
     WHERE control_state.epoch < excluded.epoch \
        OR (control_state.epoch = excluded.epoch AND control_state.controller <> excluded.controller)";
pub(crate) const LOG_HAS_EPOCH: &str =
    "SELECT epoch FROM control_log WHERE edge_id = $1 AND epoch = $2";
pub(crate) const SET_LOG_AUTHOR: &str =
    "UPDATE control_log SET by_user = $3 WHERE edge_id = $1 AND epoch = $2";
pub(crate) const INSERT_SITE_ACTION: &str =
    "INSERT INTO site_audit (edge_id, at_ms, action, by_user) VALUES ($1, $2, $3, $4)";
pub(crate) const SITE_ACTIONS: &str = "SELECT edge_id, at_ms, action, by_user FROM site_audit \
     WHERE edge_id = $1 ORDER BY seq DESC LIMIT $2";
/// Sites whose last maintenance action turned it on, with when.
pub(crate) const IN_MAINTENANCE: &str = "SELECT a.edge_id, a.at_ms FROM site_audit a \
     WHERE a.action = 'maintenance_on' AND NOT EXISTS (SELECT 1 FROM site_audit b \
     WHERE b.edge_id = a.edge_id AND b.seq > a.seq AND b.action IN ('maintenance_on', 'maintenance_off'))";
/// Per site, its newest stop record (`planned_stop` or `lost_stop`), with when.
pub(crate) const LAST_STOPS: &str = "SELECT a.edge_id, a.action, a.at_ms FROM site_audit a \
     WHERE a.action IN ('planned_stop', 'lost_stop') AND NOT EXISTS (SELECT 1 FROM site_audit b \
     WHERE b.edge_id = a.edge_id AND b.seq > a.seq AND b.action IN ('planned_stop', 'lost_stop'))";
/// Per site, when its edge last stopped on purpose.
pub(crate) const LAST_PLANNED_STOPS: &str = "SELECT edge_id, MAX(at_ms) FROM site_audit \
     WHERE action = 'planned_stop' GROUP BY edge_id";
/// An edge's link is up to a node while that node holds its site.
pub(crate) const RECORD_EDGE_LINK: &str = "INSERT INTO edge_links (edge_id, node_id, since_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (edge_id) DO UPDATE \
     SET node_id = excluded.node_id, since_ms = excluded.since_ms";
/// That link ended (a link to another node since is left alone).
pub(crate) const FORGET_EDGE_LINK: &str =
    "DELETE FROM edge_links WHERE edge_id = $1 AND node_id = $2";
pub(crate) const EDGE_LINKS: &str = "SELECT edge_id, node_id FROM edge_links";
/// The first master to need the ticket secret makes it; the others read it.
pub(crate) const OFFER_TICKET_SECRET: &str =
    "INSERT INTO link_ticket_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING";
pub(crate) const TICKET_SECRET: &str = "SELECT secret FROM link_ticket_secret WHERE id = 1";
pub(crate) const LOG_PAGE: &str = "SELECT id, edge_id, epoch, from_side, to_side, reason, at_ms, by_user FROM control_log \
     WHERE edge_id = $1 AND epoch < $2 ORDER BY epoch DESC LIMIT $3";

// Replication (`store/replica.rs`).

/// Replicated documents, for [`values`]: keeps a later version already
/// here (by the master's sequence number, which also moves when only a
/// document's site changed); at the same place, the master's word on
/// whether it is in the edge's site (a tombstone) wins. Returns the ids it
/// wrote.
pub(crate) const UPSERT_REPLICATED_HEAD: &str =
    "INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) ";
pub(crate) const UPSERT_REPLICATED_TAIL: &str = " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = excluded.rev, \
     seq = excluded.seq, deleted = excluded.deleted, owner = excluded.owner, body = excluded.body \
     WHERE excluded.seq > documents.seq \
        OR (excluded.seq = documents.seq AND excluded.deleted <> documents.deleted) RETURNING id";
/// Which of these ids the replica holds, for [`id_list`].
pub(crate) const HELD_HEAD: &str = "SELECT id FROM documents WHERE id IN ";
pub(crate) const LIVE_IDS: &str = "SELECT id FROM documents WHERE NOT deleted";
/// A document that left the edge's site: a tombstone at the same place.
pub(crate) const DROP_REPLICATED: &str = "UPDATE documents SET deleted = TRUE, owner = NULL, body = 'null' \
     WHERE id = $1 AND NOT deleted";
pub(crate) const MOVE_CHECKPOINT: &str =
    "UPDATE outpost_meta SET value = $1 WHERE key = 'seq' AND value < $1";
pub(crate) const GET_INFO: &str = "SELECT value FROM store_info WHERE key = $1";
pub(crate) const SET_INFO: &str = "INSERT INTO store_info (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
pub(crate) const DELETE_INFO: &str = "DELETE FROM store_info WHERE key = $1";
pub(crate) const CLEAR_DOCUMENTS: &str = "DELETE FROM documents";
pub(crate) const CLEAR_REFS: &str = "DELETE FROM doc_refs";
pub(crate) const RESET_SEQ: &str = "UPDATE outpost_meta SET value = 0 WHERE key = 'seq'";

// Event logs (`store/events.rs`).

pub(crate) const DELETE_COALESCED: &str = "DELETE FROM events \
     WHERE NOT synced AND kind = 'status' AND module_id = $1 AND key = $2";
/// The unsynced status rows of these (module, key) pairs, which newer values
/// replace: one indexed lookup per pair (`events_coalesce`), in one statement.
pub(crate) fn delete_coalesced<DB>(pairs: &[(String, String)]) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("DELETE FROM events WHERE seq IN (");
    for (i, (module, key)) in pairs.iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push("SELECT seq FROM events WHERE NOT synced AND kind = 'status' AND module_id = ");
        q.push_bind(module.clone());
        q.push(" AND key = ");
        q.push_bind(key.clone());
    }
    q.push(")");
    q
}
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (id, edge_id, at_ms, module_id, kind, key, epoch, body, synced) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING seq";
/// Events, for [`values`]: each at most once (by id); returns the places of
/// the ones that were new.
pub(crate) const INSERT_EVENTS_HEAD: &str = "INSERT INTO events \
     (id, edge_id, at_ms, module_id, kind, key, epoch, body, synced, refused, stored_ms) ";
pub(crate) const INSERT_EVENTS_TAIL: &str = " ON CONFLICT (id) DO NOTHING RETURNING seq";
/// Marks events (by id) synced, for [`id_list`].
pub(crate) const MARK_SYNCED_HEAD: &str = "UPDATE events SET synced = TRUE WHERE id IN ";
pub(crate) const EVENT_SEQ: &str = "SELECT seq FROM events WHERE id = $1";
pub(crate) const COUNT_EVENTS: &str = "SELECT COUNT(*) FROM events";
// `synced = TRUE` / `synced = FALSE`, never `synced` / `NOT synced`: SQLite
// searches `events_unsynced (synced, seq)` only for a comparison, and scans
// the whole log for the bare column (a log of 100,000 rows, read at every
// retry and counted every second). The coalescing lookups keep `NOT synced`,
// which is what lets SQLite use the partial index `events_coalesce`.
pub(crate) const TRIM_SYNCED: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events WHERE synced = TRUE ORDER BY seq LIMIT $1)";
pub(crate) const TRIM_UNSYNCED_KIND: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events WHERE synced = FALSE AND kind = $2 ORDER BY seq LIMIT $1)";
pub(crate) const ADD_DROPPED: &str =
    "UPDATE outpost_meta SET value = value + $1 WHERE key = 'events_dropped'";
pub(crate) const GET_DROPPED: &str = "SELECT value FROM outpost_meta WHERE key = 'events_dropped'";
pub(crate) const COUNT_UNSYNCED: &str = "SELECT COUNT(*) FROM events WHERE synced = FALSE";
pub(crate) const UNSYNCED_EVENTS: &str = "SELECT seq, id, edge_id, at_ms, module_id, kind, key, epoch, body, synced, refused \
     FROM events WHERE synced = FALSE AND seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const EVENTS_OF: &str = "SELECT seq, id, edge_id, at_ms, module_id, kind, key, epoch, body, synced, refused \
     FROM events WHERE edge_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
/// Master retention: up to `$2` events the master stored before `$1` (by
/// its own clock, not the edge's stamp), oldest first along `events_stored`.
pub(crate) const PRUNE_OLD_EVENTS: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events WHERE stored_ms < $1 ORDER BY stored_ms LIMIT $2)";
/// Master retention: the `$1` oldest events.
pub(crate) const PRUNE_FIRST_EVENTS: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events ORDER BY seq LIMIT $1)";
pub(crate) const GET_CURSOR: &str = "SELECT last_seq FROM sync_progress WHERE edge_id = $1";
pub(crate) const SET_CURSOR: &str = "INSERT INTO sync_progress (edge_id, last_seq) VALUES ($1, $2) \
     ON CONFLICT (edge_id) DO UPDATE SET last_seq = excluded.last_seq \
     WHERE sync_progress.last_seq < excluded.last_seq";

// A master cluster (PostgreSQL only). Every time is the server's clock.

/// Passes while `$1` holds the lease at term `$2`, unexpired; `FOR SHARE`
/// makes a grant to another node wait for this transaction.
pub(crate) const CHECK_FENCE: &str = "SELECT term FROM cluster_lease \
     WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp() FOR SHARE";
pub(crate) const UPSERT_NODE: &str = "INSERT INTO cluster_nodes (node_id, state, priority, preempt, api, link, seen_at) \
     VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp()) \
     ON CONFLICT (node_id) DO UPDATE SET state = $2, priority = $3, preempt = $4, api = $5, link = $6, seen_at = clock_timestamp()";
pub(crate) const FORGET_NODES: &str =
    "DELETE FROM cluster_nodes WHERE seen_at < clock_timestamp() - interval '1 day'";
/// Granted when the lease is free or expired and no live standby (seen
/// within the lease) ranks before `$1`: higher priority, or the same and
/// a smaller node id.
pub(crate) const ACQUIRE_LEASE: &str = "UPDATE cluster_lease \
     SET holder = $1, term = term + 1, expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
     WHERE id = 1 AND (holder IS NULL OR expires_at <= clock_timestamp()) \
     AND NOT EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id <> $1 AND n.state = 'STANDBY' \
         AND n.seen_at > clock_timestamp() - $2 * interval '1 millisecond' \
         AND (n.priority > $3 OR (n.priority = $3 AND n.node_id < $1))) \
     RETURNING term";
pub(crate) const RENEW_LEASE: &str = "UPDATE cluster_lease \
     SET expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
     WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp() RETURNING term";
/// `RENEW_LEASE` also once the lease expired at the server, as long as
/// nobody was granted it since (holder and term unchanged): a
/// `cluster_failsafe` MASTER that rode out an outage. A grant updates the
/// row, so a renewal and a grant racing for an expired lease are
/// serialised by its row lock and the later one finds the other's values.
pub(crate) const RENEW_OWN_LEASE: &str = "UPDATE cluster_lease \
     SET expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
     WHERE id = 1 AND holder = $1 AND term = $2 RETURNING term";
/// A live standby with `preempt` set that ranks above the holder `$1`.
pub(crate) const PREEMPTER: &str = "SELECT node_id FROM cluster_nodes \
     WHERE node_id <> $1 AND state = 'STANDBY' AND preempt AND priority > $2 \
     AND seen_at > clock_timestamp() - $3 * interval '1 millisecond' \
     ORDER BY priority DESC, node_id LIMIT 1";
pub(crate) const RELEASE_LEASE: &str = "UPDATE cluster_lease SET holder = NULL, expires_at = clock_timestamp() \
     WHERE id = 1 AND holder = $1 AND term = $2";
pub(crate) const GET_LEASE: &str = "SELECT l.holder, l.term, l.expires_at > clock_timestamp(), n.api, n.link \
     FROM cluster_lease l LEFT JOIN cluster_nodes n ON n.node_id = l.holder WHERE l.id = 1";
pub(crate) const LIST_NODES: &str = "SELECT node_id, state, priority, preempt, api, link, \
     (extract(epoch FROM clock_timestamp() - seen_at) * 1000)::BIGINT FROM cluster_nodes ORDER BY node_id";
pub(crate) const INSERT_HISTORY: &str = "INSERT INTO cluster_history (node_id, term, reason, at) \
     VALUES ($1, $2, $3, clock_timestamp())";
pub(crate) const TRIM_HISTORY: &str =
    "DELETE FROM cluster_history WHERE id <= (SELECT max(id) FROM cluster_history) - $1";
pub(crate) const LIST_HISTORY: &str = "SELECT node_id, term, reason, \
     (extract(epoch FROM at) * 1000)::BIGINT FROM cluster_history ORDER BY id DESC LIMIT $1";
/// The channel a release is announced on.
pub(crate) const RELEASE_CHANNEL: &str = "outpost_cluster_released";
pub(crate) const NOTIFY_RELEASED: &str = "SELECT pg_notify('outpost_cluster_released', '')";
