//! What each edge's replica receives (`replica_scope`). With `site` (the
//! default), an edge gets its own location, its systems, their modules and
//! the API keys that may act on it (admins, viewers, and operators whose
//! user is in the location's `admins`); nothing else.
//!
//! The change feed stays whole and ordered: every change after the edge's
//! checkpoint is answered, in place, either with the document (in the
//! site now) or with a bare tombstone (kind, id, revision and sequence
//! number, no body, no owner), which the edge applies only to a document
//! it holds. So a document leaving the site reaches the edge as a
//! tombstone. A document whose site changes without its own body changing
//! (a system moved between sites brings its modules) gets a new sequence
//! number in the same transaction (`Store::apply`, `moved_by`), so it is in
//! the feed too. Keys follow the location's `admins`: a page holding the
//! edge's own location carries every key again, each as it stands. Each
//! change is judged by the site as it is when the page is answered, read
//! after the page's documents: a version is only ever sent to an edge whose
//! site holds the document at that moment or later.
//!
//! A fresh replica, one that held the full copy (an upgrade), or one that
//! the master had told to copy everything, first takes a site snapshot
//! (`site_snapshot`): indexed reads of the site alone, in id order, then
//! the site's ids on the last page, so the edge turns everything else it
//! holds into tombstones as its checkpoint moves. A link that drops mid-way
//! starts the snapshot again; pages already applied are harmless.
//!
//! A version-1 edge cannot take a site snapshot or drop what it holds: it
//! keeps receiving the whole feed, as before (README, `replica_scope`).

use std::collections::HashSet;

use uuid::Uuid;

use crate::model::{ApiKey, EdgeLocation, KeyRole, Kind};
use crate::proto::{DocChange, ReplicaScope, ResponseBody};
use crate::store::{Document, Store, StoreError};

/// The first protocol version whose edges take a site snapshot.
const SITE_SNAPSHOT_VERSION: u16 = 2;

/// A page of the change feed as answered, and what the console learns of it.
pub(super) struct FeedPage {
    pub answer: ResponseBody,
    /// Changes of the feed the page went through.
    pub scanned: usize,
    pub last_scanned: Option<i64>,
    pub last_seq: i64,
}

/// Answers edges' replication requests under the master's `replica_scope`.
#[derive(Clone)]
pub(super) struct SiteFeed {
    store: Store,
    scope: ReplicaScope,
}

impl SiteFeed {
    pub(super) fn new(store: Store, scope: ReplicaScope) -> Self {
        Self { store, scope }
    }

    /// The feed after `after` for `edge`, on a link speaking `version`.
    pub(super) async fn changes(
        &self,
        edge: Uuid,
        after: i64,
        limit: u32,
        version: u16,
    ) -> Result<FeedPage, StoreError> {
        // Read first: a short page then covers the feed up to here.
        let last_seq = self.store.last_seq().await?;
        let rows = self.store.changes_since(after, limit).await?;
        let scanned = rows.len();
        let last_scanned = rows.last().map(|d| d.seq);
        let through = if scanned < limit as usize {
            last_seq.max(last_scanned.unwrap_or(after))
        } else {
            last_scanned.unwrap_or(after)
        };
        let site = self.scope == ReplicaScope::Site && version >= SITE_SNAPSHOT_VERSION;
        let docs = if site && !rows.is_empty() {
            self.scoped(edge, rows).await?
        } else {
            rows.into_iter().map(change).collect()
        };
        let newer = version >= SITE_SNAPSHOT_VERSION;
        let answer = ResponseBody::Changes {
            store_id: self.store.store_id(),
            docs,
            last_seq,
            through: newer.then_some(through),
            scope: newer.then_some(if site {
                ReplicaScope::Site
            } else {
                ReplicaScope::All
            }),
        };
        Ok(FeedPage {
            answer,
            scanned,
            last_scanned,
            last_seq,
        })
    }

    /// `rows` as `edge` may see them: its site's documents whole, the rest
    /// as tombstones; with every key again when its location changed.
    async fn scoped(&self, edge: Uuid, rows: Vec<Document>) -> Result<Vec<DocChange>, StoreError> {
        let mut site = self.store.site_ids(edge).await?;
        let (keys, key_ids) = self.keys_of(edge).await?;
        site.extend(key_ids.iter().copied());
        let mut docs = Vec::with_capacity(rows.len());
        if rows.iter().any(|d| d.id == edge) {
            // Its `admins` may have changed: which keys it holds follows.
            for key in keys {
                let keep = key_ids.contains(&key.id);
                docs.push(if keep { change(key) } else { tombstone(&key) });
            }
        }
        for row in rows {
            docs.push(if site.contains(&row.id) {
                change(row)
            } else {
                tombstone(&row)
            });
        }
        Ok(docs)
    }

    /// Every live key, and the ids of those that may act on `edge`'s site.
    async fn keys_of(&self, edge: Uuid) -> Result<(Vec<Document>, HashSet<Uuid>), StoreError> {
        let admins = match self.store.get(edge).await? {
            Some(doc) => doc.parse::<EdgeLocation>()?.admins,
            None => Vec::new(),
        };
        let keys = self.store.list_all(Kind::ApiKey).await?;
        let mut ids = HashSet::new();
        for doc in &keys {
            let key = doc.parse::<ApiKey>()?;
            if key.role != KeyRole::Operator || admins.contains(&key.user) {
                ids.insert(key.id);
            }
        }
        Ok((keys, ids))
    }

    /// A page of `edge`'s site after `after_id`; the last page names every
    /// id of the site.
    pub(super) async fn site_snapshot(
        &self,
        edge: Uuid,
        after_id: Option<Uuid>,
        limit: u32,
    ) -> Result<ResponseBody, StoreError> {
        let as_of = self.store.last_seq().await?;
        let (mut docs, complete) = self.store.site_page(edge, after_id, limit).await?;
        let (keys, key_ids) = self.keys_of(edge).await?;
        docs.extend(
            keys.into_iter()
                .filter(|k| key_ids.contains(&k.id) && after_id.is_none_or(|a| k.id > a)),
        );
        docs.sort_by_key(|d| d.id);
        docs.dedup_by_key(|d| d.id);
        let done = complete && docs.len() <= limit as usize;
        docs.truncate(limit as usize);
        let keep = if done {
            let mut ids = self.store.site_ids(edge).await?;
            ids.extend(key_ids);
            let mut ids: Vec<Uuid> = ids.into_iter().collect();
            ids.sort_unstable();
            Some(ids)
        } else {
            None
        };
        Ok(ResponseBody::SiteSnapshot {
            store_id: self.store.store_id(),
            docs: docs.into_iter().map(change).collect(),
            as_of,
            keep,
        })
    }
}

fn change(d: Document) -> DocChange {
    DocChange {
        kind: d.kind,
        id: d.id,
        rev: d.rev,
        seq: d.seq,
        deleted: d.deleted,
        owner: d.owner,
        body: d.body,
    }
}

/// A document outside the edge's site, as the edge may see it: that it is
/// not (or no longer) there, and nothing of what it says.
fn tombstone(d: &Document) -> DocChange {
    DocChange {
        kind: d.kind.clone(),
        id: d.id,
        rev: d.rev,
        seq: d.seq,
        deleted: true,
        owner: None,
        body: "null".into(),
    }
}
