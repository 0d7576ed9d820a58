//! Which node of a master cluster acts, in the form the lower layers need:
//! the link (redirect an edge that reached a standby), the API (serve reads,
//! hand writes and device calls to the acting node) and the device paths
//! (drive nothing unless acting). The master cluster itself owns
//! the lease and publishes this through a [`LeadershipWatch`]; a master
//! without a cluster is [`Leadership::alone`] for its whole life.

use serde::{Deserialize, Serialize};

/// A node's state, as Brooklyn names them (`/api/v1/ha/state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    /// Started, lease not yet tried.
    Initializing,
    /// Live, keeping its view current, driving nothing.
    Standby,
    /// Holds the lease: the one node that drives devices and edges.
    Master,
    /// Cannot take part (database unreachable past its deadline, fenced).
    Failed,
    /// Stopped for good (after a graceful stop).
    Terminated,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Initializing => "INITIALIZING",
            NodeState::Standby => "STANDBY",
            NodeState::Master => "MASTER",
            NodeState::Failed => "FAILED",
            NodeState::Terminated => "TERMINATED",
        }
    }
}

/// Where the acting node can be reached, as it advertises itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAddress {
    pub node_id: String,
    /// Base URL of its web API (`advertise_api`), e.g. `https://m1:8080`.
    pub api: Option<String>,
    /// Its link address (`advertise_link`), `host:port`.
    pub link: Option<String>,
}

/// This node's view of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub state: NodeState,
    /// The fencing term of the current grant (0 without a cluster).
    pub term: u64,
    /// The acting node, when known (this node itself when it is MASTER).
    pub leader: Option<LeaderAddress>,
}

impl Leadership {
    /// A master without a cluster: MASTER alone, for good.
    pub fn alone() -> Self {
        Leadership {
            state: NodeState::Master,
            term: 0,
            leader: None,
        }
    }

    /// Whether this node may drive devices, hold edge links and write.
    pub fn acting(&self) -> bool {
        self.state == NodeState::Master
    }
}

/// The receiving side of the cluster's published view.
pub type LeadershipWatch = tokio::sync::watch::Receiver<Leadership>;

/// A watch that says "alone" for good, for masters without a cluster and
/// for tests of the lower layers.
pub fn alone_watch() -> LeadershipWatch {
    let (tx, rx) = tokio::sync::watch::channel(Leadership::alone());
    // The sender is leaked on purpose: a closed watch still reads its last
    // value, but keeping it open lets `changed()` wait forever instead of
    // erroring in select loops.
    std::mem::forget(tx);
    rx
}
