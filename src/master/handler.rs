//! What a master answers over the link: the driver repository's files for
//! an edge's sync, and exec, status and debug streams of the modules the
//! master runs for the caller's site (an edge proxies its clients' calls
//! for those). Every request passes the per-site check first
//! (`master/authorize.rs`).

use uuid::Uuid;

use crate::api::{EdgeEventFeed, EdgeStatusFeed, ServedPage, SyncFacts};
use crate::link::repository::MasterRepo;
use crate::link::{Handler, Peer, RequestCtx};
use crate::local_ops::ModuleRequests;
use crate::proto::{DocChange, EventBody, RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;
use crate::store::{Event, EventKind, Store};

pub struct MasterHandler {
    repo: MasterRepo,
    modules: ModuleRequests,
    events: EdgeEventFeed,
    store: Store,
    control: super::Control,
    status_feed: Option<EdgeStatusFeed>,
    guard: super::authorize::SiteGuard,
    sync_facts: Option<SyncFacts>,
}

/// Most documents one `changes` answer carries.
const MAX_PAGE: u32 = 2000;

impl MasterHandler {
    pub fn new(
        runtime: Runtime,
        modules_dir: std::path::PathBuf,
        events: EdgeEventFeed,
        store: Store,
        control: super::Control,
    ) -> Self {
        Self {
            repo: MasterRepo::new(modules_dir),
            modules: ModuleRequests::new(runtime),
            events,
            guard: super::authorize::SiteGuard::new(store.clone()),
            store,
            control,
            status_feed: None,
            sync_facts: None,
        }
    }

    /// Also publishes every accepted status event into `feed`.
    pub fn with_status_feed(mut self, feed: EdgeStatusFeed) -> Self {
        self.status_feed = Some(feed);
        self
    }

    /// Also records each edge's replica position and unsynced events there.
    pub fn with_sync_facts(mut self, facts: SyncFacts) -> Self {
        self.sync_facts = Some(facts);
        self
    }

    /// Stores events pushed by an edge, each once. They are attributed to
    /// the edge the link authenticated, never to what the payload claims.
    async fn events(
        &self,
        edge_id: uuid::Uuid,
        events: &[crate::proto::WireEvent],
    ) -> Result<ResponseBody, WireError> {
        let mut batch = Vec::with_capacity(events.len());
        for e in events {
            let kind = EventKind::parse(&e.kind).ok_or_else(|| {
                WireError::bad_request(format!("unknown event kind '{}'", e.kind))
            })?;
            batch.push(Event {
                id: e.id,
                edge_id,
                at_ms: e.at_ms,
                module_id: e.module_id,
                kind,
                key: e.key.clone(),
                epoch: e.epoch,
                body: e.body.clone(),
            });
        }
        let batch = accept_from_controller(&self.store, edge_id, batch)
            .await
            .map_err(crate::local_ops::internal)?;
        let new = self
            .store
            .collect_events(edge_id, &batch, None)
            .await
            .map_err(crate::local_ops::internal)?;
        metrics::counter!("outpost_events_collected_total").increment(new as u64);
        if let Some(feed) = &self.status_feed {
            publish_status(feed, edge_id, &batch);
        }
        Ok(ResponseBody::Done)
    }

    /// A page of the change feed for an edge's replica.
    async fn changes(
        &self,
        edge_id: Uuid,
        after: i64,
        limit: u32,
        unsynced: Option<u64>,
    ) -> Result<ResponseBody, WireError> {
        let last_seq = self
            .store
            .last_seq()
            .await
            .map_err(crate::local_ops::internal)?;
        metrics::gauge!("outpost_replication_lag", "edge" => edge_id.to_string())
            .set(last_seq.saturating_sub(after).max(0) as f64);
        let docs = self
            .store
            .changes_since(after, limit.clamp(1, MAX_PAGE))
            .await
            .map_err(crate::local_ops::internal)?;
        if let Some(facts) = &self.sync_facts {
            let page = ServedPage {
                after,
                limit: limit.clamp(1, MAX_PAGE),
                sent: docs.len(),
                last_doc: docs.last().map(|d| d.seq),
                last_seq,
            };
            facts.served(edge_id, page, unsynced);
        }
        Ok(ResponseBody::Changes {
            store_id: self.store.store_id(),
            docs: docs
                .into_iter()
                .map(|d| DocChange {
                    kind: d.kind,
                    id: d.id,
                    rev: d.rev,
                    seq: d.seq,
                    deleted: d.deleted,
                    owner: d.owner,
                    body: d.body,
                })
                .collect(),
            last_seq,
        })
    }
}

impl Handler for MasterHandler {
    /// Fans an edge's events out to whoever subscribed (a slow subscriber
    /// lags and loses lines; the link's reader never waits).
    fn event(&self, peer: &Peer, body: EventBody) {
        let _ = self.events.send((peer.meta().edge_id, body));
    }

    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        // An edge's requests are limited to its own site.
        self.guard.check(ctx.peer.meta().edge_id, &body).await?;
        match &body {
            // An edge fetches a commit's files; it never moves the master's
            // repository (that is an operator's call, on the master).
            RequestBody::RepoTree { .. } | RequestBody::RepoBlob { .. } => {
                return self
                    .repo
                    .handle(&body)
                    .await
                    .unwrap_or_else(|| Err(WireError::failed("unreachable")));
            }
            RequestBody::Changes {
                after,
                limit,
                unsynced,
            } => {
                let edge = ctx.peer.meta().edge_id;
                return self.changes(edge, *after, *limit, *unsynced).await;
            }
            RequestBody::Events { events } => {
                return self.events(ctx.peer.meta().edge_id, events).await;
            }
            _ => {}
        }
        // An edge proxies its clients' calls for the modules of its site
        // that the master controls, under the epoch it was told.
        self.control
            .check_epoch(ctx.peer.meta().edge_id, body.epoch())?;
        match self.modules.handle(&ctx, body).await {
            Ok(answer) => answer,
            Err(other) => Err(WireError::Unavailable {
                message: format!("{} is not served by a master", other.kind()),
            }),
        }
    }
}

/// Sends the status events of `batch` to the feed's subscribers (none
/// listening is fine).
fn publish_status(feed: &EdgeStatusFeed, edge_id: Uuid, batch: &[Event]) {
    if feed.receiver_count() == 0 {
        return;
    }
    for e in batch {
        if let (EventKind::Status, Some(module), Some(key)) = (e.kind, e.module_id, &e.key) {
            let value = serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null);
            let change = crate::runtime::StatusChange {
                module,
                key: key.clone(),
                value,
            };
            let _ = feed.send((edge_id, change));
        }
    }
}

/// Keeps the events the edge was entitled to record: only the side that
/// controlled the location at an event's time writes its history (the AURA
/// rule: only the active engine's records are valid). The others are
/// refused, counted and logged; the edge still marks them synced, so they
/// are not offered again.
pub async fn accept_from_controller(
    store: &Store,
    edge_id: uuid::Uuid,
    events: Vec<Event>,
) -> Result<Vec<Event>, crate::store::StoreError> {
    let log = store.control_log(edge_id, None, 10_000).await?;
    if log.is_empty() {
        // No change of controller was ever recorded: the edge runs its site.
        return Ok(events);
    }
    let (accepted, refused): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| {
        // The newest change at or before the event decides; before the
        // first recorded change, the edge ran its site.
        log.iter()
            .find(|r| r.at_ms <= e.at_ms)
            .is_none_or(|r| r.to == crate::control::Side::Edge)
    });
    if !refused.is_empty() {
        metrics::counter!("outpost_events_refused_total").increment(refused.len() as u64);
        tracing::warn!(
            edge = %edge_id,
            refused = refused.len(),
            "events recorded by the edge while the master controlled the location were refused"
        );
    }
    Ok(accepted)
}
