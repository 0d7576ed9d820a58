//! What a master answers over the link: the driver repository's files for
//! an edge's sync, and exec, status and debug streams of the modules the
//! master runs for the caller's site (an edge proxies its clients' calls
//! for those). Every request passes the per-site check first
//! (`master/authorize.rs`).

use uuid::Uuid;

use crate::api::{EdgeEventFeed, EdgeStatusFeed, ServedPage, SyncFacts};
use crate::control::Clock;
use crate::link::repository::MasterRepo;
use crate::link::{Handler, Peer, RequestCtx};
use crate::local_ops::ModuleRequests;
use crate::proto::{EventBody, RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;
use crate::store::{Event, EventKind, Store};

pub struct MasterHandler {
    repo: MasterRepo,
    modules: ModuleRequests,
    events: EdgeEventFeed,
    store: Store,
    control: super::Control,
    /// The master's clock (the one retention reads): stamps when each
    /// pushed event was stored.
    clock: Clock,
    status_feed: Option<EdgeStatusFeed>,
    guard: super::authorize::SiteGuard,
    sync_facts: Option<SyncFacts>,
    feed: super::replica::SiteFeed,
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
        clock: Clock,
    ) -> Self {
        Self {
            repo: MasterRepo::new(modules_dir),
            modules: ModuleRequests::new(runtime),
            events,
            guard: super::authorize::SiteGuard::new(store.clone()),
            feed: super::replica::SiteFeed::new(store.clone(), crate::proto::ReplicaScope::Site),
            store,
            control,
            clock,
            status_feed: None,
            sync_facts: None,
        }
    }

    /// Also publishes every accepted status event into `feed`.
    pub fn with_status_feed(mut self, feed: EdgeStatusFeed) -> Self {
        self.status_feed = Some(feed);
        self
    }

    /// Replicates `scope` to edges (`replica_scope`; `Site` unless set).
    pub fn with_replica_scope(mut self, scope: crate::proto::ReplicaScope) -> Self {
        self.feed = super::replica::SiteFeed::new(self.store.clone(), scope);
        self
    }

    /// Also records each edge's replica position and unsynced events there.
    pub fn with_sync_facts(mut self, facts: SyncFacts) -> Self {
        self.sync_facts = Some(facts);
        self
    }

    /// Stores events pushed by an edge, each once. They are attributed to
    /// the edge the link authenticated, never to what the payload claims.
    /// Each is judged by the control epoch it was produced under; refused
    /// ones are stored too, marked (never acknowledged and lost). A kind
    /// this build does not know is stored as it came. Each is stamped with
    /// the master's clock as it is stored: retention counts from there.
    async fn events(
        &self,
        edge_id: uuid::Uuid,
        events: &[crate::proto::WireEvent],
    ) -> Result<ResponseBody, WireError> {
        let batch = events.iter().map(|e| from_wire(edge_id, e)).collect();
        let judged = judge_events(&self.store, edge_id, batch)
            .await
            .map_err(crate::local_ops::internal)?;
        let rows: Vec<(&Event, Option<&str>)> =
            judged.iter().map(|(e, why)| (e, why.as_deref())).collect();
        let new = self
            .store
            .collect_judged(edge_id, &rows, None, self.clock.now_ms())
            .await
            .map_err(crate::local_ops::internal)?;
        metrics::counter!("outpost_events_collected_total").increment(new as u64);
        if let Some(feed) = &self.status_feed {
            let accepted: Vec<&Event> = judged
                .iter()
                .filter(|(_, why)| why.is_none())
                .map(|(e, _)| e)
                .collect();
            publish_status(feed, edge_id, &accepted);
        }
        Ok(ResponseBody::Done)
    }

    /// A page of the change feed for an edge's replica, limited to its site
    /// (`master/replica.rs`).
    async fn changes(
        &self,
        peer: &crate::link::PeerMeta,
        after: i64,
        limit: u32,
        unsynced: Option<u64>,
    ) -> Result<ResponseBody, WireError> {
        let edge_id = peer.edge_id;
        let limit = limit.clamp(1, MAX_PAGE);
        let page = self
            .feed
            .changes(edge_id, after, limit, peer.version)
            .await
            .map_err(crate::local_ops::internal)?;
        metrics::gauge!("outpost_replication_lag", "edge" => edge_id.to_string())
            .set(page.last_seq.saturating_sub(after).max(0) as f64);
        if let Some(facts) = &self.sync_facts {
            let served = ServedPage {
                after,
                limit,
                sent: page.scanned,
                last_doc: page.last_scanned,
                last_seq: page.last_seq,
            };
            facts.served(edge_id, served, unsynced);
        }
        Ok(page.answer)
    }
}

impl Handler for MasterHandler {
    /// Fans an edge's events out to whoever subscribed (a slow subscriber
    /// lags and loses lines; the link's reader never waits).
    fn event(&self, peer: &Peer, body: EventBody) {
        if let EventBody::Stopping { restart } = body {
            self.control
                .stopping(peer.meta().edge_id, peer.meta().session, restart);
            return;
        }
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
                return self
                    .changes(ctx.peer.meta(), *after, *limit, *unsynced)
                    .await;
            }
            RequestBody::SiteSnapshot { after_id, limit } => {
                return self
                    .feed
                    .site_snapshot(
                        ctx.peer.meta().edge_id,
                        *after_id,
                        (*limit).clamp(1, MAX_PAGE),
                    )
                    .await
                    .map_err(crate::local_ops::internal);
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
fn publish_status(feed: &EdgeStatusFeed, edge_id: Uuid, batch: &[&Event]) {
    if feed.receiver_count() == 0 {
        return;
    }
    for e in batch {
        if let (EventKind::Status, Some(module), Some(key)) = (&e.kind, e.module_id, &e.key) {
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

/// An event as an edge sent it, attributed to `edge_id` (the link's).
pub(super) fn from_wire(edge_id: Uuid, e: &crate::proto::WireEvent) -> Event {
    Event {
        id: e.id,
        edge_id,
        at_ms: e.at_ms,
        module_id: e.module_id,
        kind: EventKind::parse(&e.kind),
        key: e.key.clone(),
        epoch: e.epoch,
        body: e.body.clone(),
    }
}

/// Keeps the events the edge was entitled to record: only the side that
/// controlled the location writes its history (the AURA rule: only the
/// active engine's records are valid). Judged by control epochs, never by
/// comparing two hosts' clocks; see [`judge_events`]. Returns the accepted
/// ones.
pub async fn accept_from_controller(
    store: &Store,
    edge_id: uuid::Uuid,
    events: Vec<Event>,
) -> Result<Vec<Event>, crate::store::StoreError> {
    Ok(judge_events(store, edge_id, events)
        .await?
        .into_iter()
        .filter_map(|(e, why)| why.is_none().then_some(e))
        .collect())
}

/// Judges each event of an edge: accepted (`None`) when it was produced
/// under an epoch whose control record gives the location to the edge, or
/// under an epoch before any record (the edge ran its site before anyone
/// decided); refused with the reason otherwise. The edge's own control
/// records (what it was told, its autonomy) are always accepted: they
/// are its audit trail. An event without an epoch (an older edge) is
/// judged by its time against the control log, as older masters did.
/// Refused events are counted (`outpost_events_refused_total`) and logged.
pub async fn judge_events(
    store: &Store,
    edge_id: uuid::Uuid,
    events: Vec<Event>,
) -> Result<Vec<(Event, Option<String>)>, crate::store::StoreError> {
    let mut by_epoch: std::collections::HashMap<i64, Option<String>> = Default::default();
    let mut log: Option<Vec<crate::store::ControlRecord>> = None;
    let mut judged = Vec::with_capacity(events.len());
    for e in events {
        let why = if e.kind == EventKind::Control {
            None
        } else if let Some(epoch) = e.epoch {
            match by_epoch.get(&epoch) {
                Some(why) => why.clone(),
                None => {
                    let why = refusal_at(store, edge_id, epoch).await?;
                    by_epoch.insert(epoch, why.clone());
                    why
                }
            }
        } else {
            if log.is_none() {
                log = Some(store.control_log(edge_id, None, 10_000).await?);
            }
            refusal_by_time(log.as_deref().unwrap_or_default(), e.at_ms)
        };
        judged.push((e, why));
    }
    let refused = judged.iter().filter(|(_, why)| why.is_some()).count();
    if refused > 0 {
        metrics::counter!("outpost_events_refused_total").increment(refused as u64);
        tracing::warn!(
            edge = %edge_id,
            refused,
            "events the edge produced while it did not control the location were stored as refused"
        );
    }
    Ok(judged)
}

/// Why an event produced under `epoch` is refused, if it is.
async fn refusal_at(
    store: &Store,
    edge_id: Uuid,
    epoch: i64,
) -> Result<Option<String>, crate::store::StoreError> {
    // The record of `epoch`, or the newest before it.
    let record = store
        .control_log(edge_id, Some(epoch.saturating_add(1)), 1)
        .await?;
    Ok(match record.first() {
        None => None,
        Some(r) if r.epoch == epoch && r.to == crate::control::Side::Edge => None,
        Some(r) if r.epoch == epoch => Some(format!(
            "produced under epoch {epoch}, when the master controlled the location"
        )),
        Some(_) => Some(format!(
            "produced under epoch {epoch}, which the master never recorded"
        )),
    })
}

/// The judgement of an event without an epoch: the newest change at or
/// before its time decides; before the first recorded change, the edge ran
/// its site. `log` is newest first.
fn refusal_by_time(log: &[crate::store::ControlRecord], at_ms: i64) -> Option<String> {
    match log.iter().find(|r| r.at_ms <= at_ms) {
        Some(r) if r.to == crate::control::Side::Master => Some(format!(
            "recorded without an epoch at {at_ms} ms by the edge's clock, while the master controlled the location"
        )),
        _ => None,
    }
}
