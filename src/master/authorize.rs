//! Per-site authorization of what an edge asks the master: an edge's
//! requests are limited to its own site. The link authenticates an edge;
//! this decides what that edge may ask for, before any handler runs.
//!
//! - `exec`, `status`, `module_state`, `debug_subscribe`,
//!   `debug_unsubscribe`: only on a
//!   module of a system whose `edge_id` is the caller (rule `own_site`),
//!   the proxy path of an edge's clients after a takeover;
//! - `start_system`, `stop_system`, `expire_system_cache`: only on a system
//!   of the caller's site (`own_site`);
//! - `exec`, `start_system`, `stop_system` carry the caller's control epoch
//!   (`epoch_required`; a wrong one is `StaleEpoch`, checked by the handler);
//! - `changes`, `events`, `repo_tree`, `repo_blob`: an edge's own business;
//! - every kind only the master sends (`master_only`).
//!
//! Which site a module or system belongs to is `store/scope.rs`'s rule,
//! read through a small cache: an entry is trusted while no write has
//! committed through this process (the store's commit watch) and for at
//! most [`TTL`], so a move by another process (`outpost admin import`)
//! is seen within that time. A refusal is a `WireError::Forbidden` naming
//! the rule, counted in `outpost_link_refused_requests_total{rule,kind}`
//! and logged with the edge id (at most [`LOG_BURST`] lines per edge a
//! minute, then one line with the count).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use crate::local_ops::{internal, module_id};
use crate::proto::{RequestBody, WireError};
use crate::store::{Site, Store};
use crate::util::Unpoisoned;

/// The longest a cached site is trusted without a commit through this
/// process.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; beyond it the cache starts again empty.
const MAX_ENTRIES: usize = 100_000;
/// Refusals logged per edge and minute; the rest are counted in one line.
pub const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// The rule that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The module or system is not part of the caller's site.
    OwnSite,
    /// A request that acts on devices came without a control epoch.
    EpochRequired,
    /// Only the master sends this kind.
    MasterOnly,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::OwnSite => "own_site",
            Rule::EpochRequired => "epoch_required",
            Rule::MasterOnly => "master_only",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Module(Uuid),
    System(Uuid),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Module(id) => write!(f, "module {id}"),
            Target::System(id) => write!(f, "system {id}"),
        }
    }
}

struct Entry {
    seq: i64,
    at: Instant,
    /// The one site it belongs to (`None`: none, or more than one).
    site: Option<Site>,
}

/// Refusals logged for one edge in the current window.
struct LogWindow {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

/// The master's per-site check of edge requests.
pub struct SiteGuard {
    store: Store,
    commits: watch::Receiver<i64>,
    cache: Mutex<HashMap<Target, Entry>>,
    logs: Mutex<HashMap<Uuid, LogWindow>>,
}

impl SiteGuard {
    pub fn new(store: Store) -> Self {
        metrics::describe_counter!(
            "outpost_link_refused_requests_total",
            "Requests from edges refused by the per-site authorization, by rule and kind"
        );
        Self {
            commits: store.subscribe_commits(),
            store,
            cache: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `edge_id` may ask `body`; a refusal is counted and logged.
    pub async fn check(&self, edge_id: Uuid, body: &RequestBody) -> Result<(), WireError> {
        match self.verdict(edge_id, body).await? {
            None => Ok(()),
            Some((rule, message)) => Err(self.refuse(edge_id, body.kind(), rule, message)),
        }
    }

    /// `None` when allowed, else the rule and why.
    async fn verdict(
        &self,
        edge_id: Uuid,
        body: &RequestBody,
    ) -> Result<Option<(Rule, String)>, WireError> {
        use RequestBody as R;
        let target = match body {
            R::Exec { module, .. }
            | R::Status { module, .. }
            | R::ModuleState { module }
            | R::DebugSubscribe { module }
            | R::DebugUnsubscribe { module } => Target::Module(module_id(module)?),
            R::StartSystem { system, .. }
            | R::StopSystem { system, .. }
            | R::ExpireSystemCache { system } => Target::System(*system),
            // The site of a replication request is the link's edge, never
            // anything the request says (`master/replica.rs`).
            R::Changes { .. }
            | R::SiteSnapshot { .. }
            | R::Events { .. }
            | R::RepoTree { .. }
            | R::RepoBlob { .. } => {
                return Ok(None);
            }
            R::ReloadDriver { .. }
            | R::Repository { .. }
            | R::UnsyncedEvents { .. }
            | R::EventsSynced { .. }
            | R::ControlReport
            | R::ControlAssume { .. }
            | R::ControlRelease { .. }
            | R::Superseded { .. } => {
                return Ok(Some((
                    Rule::MasterOnly,
                    format!("only the master sends '{}'", body.kind()),
                )));
            }
        };
        if self.site(target).await.map_err(internal)? != Some(Site::Edge(edge_id)) {
            // The same words whether it exists elsewhere or not at all: an
            // edge learns nothing about other sites from a refusal.
            return Ok(Some((
                Rule::OwnSite,
                format!("{target} is not part of this edge's site"),
            )));
        }
        let needs_epoch = matches!(
            body,
            R::Exec { .. } | R::StartSystem { .. } | R::StopSystem { .. }
        );
        if needs_epoch && body.epoch().is_none() {
            return Ok(Some((
                Rule::EpochRequired,
                format!("'{}' must carry the edge's control epoch", body.kind()),
            )));
        }
        Ok(None)
    }

    /// The site of `target`, cached (see the module docs).
    async fn site(&self, target: Target) -> Result<Option<Site>, crate::store::StoreError> {
        let seq = *self.commits.borrow();
        if let Some(e) = self.cache.lock_unpoisoned().get(&target)
            && e.seq == seq
            && e.at.elapsed() < TTL
        {
            return Ok(e.site);
        }
        let site = match target {
            Target::Module(id) => match self.store.module_sites(id).await?.as_slice() {
                [one] => Some(*one),
                _ => None,
            },
            Target::System(id) => self.store.system_site(id).await?,
        };
        let mut cache = self.cache.lock_unpoisoned();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        // Stamped with the sequence number read before the query: a commit
        // meanwhile makes the entry stale at once.
        cache.insert(
            target,
            Entry {
                seq,
                at: Instant::now(),
                site,
            },
        );
        Ok(site)
    }

    fn refuse(&self, edge_id: Uuid, kind: &'static str, rule: Rule, message: String) -> WireError {
        metrics::counter!(
            "outpost_link_refused_requests_total",
            "rule" => rule.as_str(),
            "kind" => kind,
        )
        .increment(1);
        let mut logs = self.logs.lock_unpoisoned();
        let now = Instant::now();
        let w = logs.entry(edge_id).or_insert(LogWindow {
            since: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.since) >= LOG_WINDOW {
            if w.suppressed > 0 {
                tracing::warn!(edge = %edge_id, suppressed = w.suppressed,
                    "more edge requests were refused in the last minute than were logged");
            }
            *w = LogWindow {
                since: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < LOG_BURST {
            w.logged += 1;
            tracing::warn!(edge = %edge_id, kind, rule = rule.as_str(), %message,
                "edge request refused: outside its site");
        } else {
            w.suppressed += 1;
        }
        WireError::Forbidden {
            rule: rule.as_str().to_owned(),
            message,
        }
    }
}
