//! A master cluster's state, as Brooklyn serves it: this node's state for
//! load balancers (no key), every node's heartbeat, and the history of
//! MASTERs (AURA's record of which engine was active).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::control::leadership::{Leadership, NodeState};

/// How many changes of MASTER `/ha/history` answers at most.
const HISTORY_LIMIT: u32 = 100;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HaState {
    /// `MASTER`, `STANDBY`, `INITIALIZING`, `FAILED` or `TERMINATED`.
    pub state: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HaNode {
    pub node_id: String,
    pub state: String,
    pub priority: i32,
    /// Its advertised API base URL.
    pub api: Option<String>,
    /// Its advertised link address.
    pub link: Option<String>,
    /// Milliseconds since its last heartbeat (the database's clock).
    pub last_seen_ms: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HaStates {
    /// The answering node (absent for a master alone).
    pub own_id: Option<String>,
    /// The node holding a live lease, if any.
    pub master_id: Option<String>,
    /// The fencing term of the current grant (0 without a cluster).
    pub term: u64,
    pub nodes: Vec<HaNode>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HaChange {
    pub node_id: String,
    pub term: i64,
    pub reason: String,
    /// Unix milliseconds, the database's clock.
    pub at_ms: i64,
}

fn leadership(s: &ApiState) -> Leadership {
    s.ops
        .as_ref()
        .and_then(|o| o.leadership.as_ref())
        .map(|w| w.borrow().clone())
        .unwrap_or_else(Leadership::alone)
}

/// This node's state in the master cluster (a master alone is `MASTER`).
#[utoipa::path(get, path = "/api/v1/ha/state", tag = "cluster",
    responses((status = 200, body = HaState)))]
async fn ha_state(State(s): State<Arc<ApiState>>) -> Json<HaState> {
    Json(HaState {
        state: leadership(&s).state.as_str(),
    })
}

/// Every node of the master cluster with its last heartbeat.
#[utoipa::path(get, path = "/api/v1/ha/states", tag = "cluster",
    responses((status = 200, body = HaStates), (status = 401),
        (status = 503, description = "The cluster's database cannot be read")),
    security(("bearer" = [])))]
async fn ha_states(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<HaStates>, ApiError> {
    let own = leadership(&s);
    let Some(own_id) = s.ops.as_ref().and_then(|o| o.node_id.clone()) else {
        return Ok(Json(HaStates {
            own_id: None,
            master_id: None,
            term: 0,
            nodes: Vec::new(),
        }));
    };
    let (nodes, lease) = if s.store.has_cluster_tables() {
        let nodes = s.store.cluster_nodes().await.map_err(unreadable)?;
        let lease = s.store.lease().await.map_err(unreadable)?;
        (nodes, Some(lease))
    } else {
        (Vec::new(), None)
    };
    let master_id = match &lease {
        Some(l) if l.live => l.holder.clone(),
        Some(_) => None,
        // A lock-file cluster: only this node knows.
        None => (own.state == NodeState::Master).then(|| own_id.clone()),
    };
    Ok(Json(HaStates {
        own_id: Some(own_id),
        master_id,
        term: lease.map_or(own.term, |l| l.term.max(0) as u64),
        nodes: nodes
            .into_iter()
            .map(|n| HaNode {
                node_id: n.node_id,
                state: n.state,
                priority: n.priority,
                api: n.api,
                link: n.link,
                last_seen_ms: n.last_seen_ms,
            })
            .collect(),
    }))
}

/// Every change of MASTER, newest first (at most 100).
#[utoipa::path(get, path = "/api/v1/ha/history", tag = "cluster",
    responses((status = 200, body = [HaChange]), (status = 401),
        (status = 503, description = "The cluster's database cannot be read")),
    security(("bearer" = [])))]
async fn ha_history(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<Vec<HaChange>>, ApiError> {
    let in_cluster = s.ops.as_ref().is_some_and(|o| o.node_id.is_some());
    if !in_cluster {
        return Ok(Json(Vec::new()));
    }
    // A lock-file cluster keeps no history in its SQLite database.
    let history = if s.store.has_cluster_tables() {
        let history = s.store.cluster_history(HISTORY_LIMIT).await;
        history.map_err(unreadable)?
    } else {
        Vec::new()
    };
    Ok(Json(
        history
            .into_iter()
            .map(|h| HaChange {
                node_id: h.node_id,
                term: h.term,
                reason: h.reason,
                at_ms: h.at_ms,
            })
            .collect(),
    ))
}

/// The cluster's tables could not be read (the database is unreachable):
/// 503, never an empty list that would read as "no nodes".
fn unreadable(e: crate::store::StoreError) -> ApiError {
    ApiError::Unavailable(format!(
        "the cluster's database cannot be read: {}",
        crate::util::describe(&e)
    ))
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(ha_state))
        .routes(routes!(ha_states))
        .routes(routes!(ha_history))
}
