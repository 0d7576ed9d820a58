//! Request, response and event bodies: closed enums, one variant per kind.
//! Adding a request kind is one variant here and one arm in each role's
//! handler; an older peer answers it with `WireError::UnknownKind`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What one side asks the other to do. The `kind` tags (serde) and the
/// names [`RequestBody::KINDS`] and [`RequestBody::kind`] give (strum) are
/// both snake_case of the variant, derived, never listed by hand.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RequestBody {
    /// Execute a public function of a module. `epoch` is the control epoch
    /// the caller believes in (the receiver may refuse a stale one).
    Exec {
        module: String,
        method: String,
        #[serde(default)]
        args: Value,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// A module's status: every variable, or one `key`.
    Status {
        module: String,
        #[serde(default)]
        key: Option<String>,
    },
    StartSystem {
        system: Uuid,
        #[serde(default)]
        epoch: Option<u64>,
    },
    StopSystem {
        system: Uuid,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Live reload of a driver, optionally with its new file text.
    ReloadDriver {
        name: String,
        #[serde(default)]
        source: Option<String>,
    },
    ExpireSystemCache {
        system: Uuid,
    },
    /// Start streaming a module's debug output back as `Event`s.
    DebugSubscribe {
        module: String,
    },
    /// A module's lifecycle state and device connection, for the API's
    /// module state of a module the other side runs. A peer that predates
    /// it answers `UnknownKind`, and the API says the state is not known.
    ModuleState {
        module: String,
    },
    DebugUnsubscribe {
        module: String,
    },
    /// Driver repository operations (see [`RepoOp`]).
    Repository {
        op: RepoOp,
    },
    /// Edge → master: the file list of a commit.
    RepoTree {
        commit: String,
    },
    /// Edge → master: one blob's bytes, by object id.
    RepoBlob {
        oid: String,
    },
    /// Edge → master: replicated documents with a sequence number above
    /// `after` (the edge's checkpoint), at most `limit`, in order.
    Changes {
        after: i64,
        limit: u32,
        /// Events in the edge's log the master has not acknowledged yet,
        /// as the edge counted them before asking (for the console's
        /// overview). Absent from a peer that predates it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unsynced: Option<u64>,
    },
    /// Edge → master (to a master whose `Changes` said `scope: site`): a
    /// page of the edge's site as it is now, the documents with an id above
    /// `after_id`, at most `limit`, in id order. The master chooses the
    /// site from the link's edge id; nothing in the request names one.
    SiteSnapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_id: Option<Uuid>,
        limit: u32,
    },
    /// Edge → master: events recorded at the edge (active sync). The master
    /// stores each at most once and attributes them to the link's edge,
    /// whatever the payload says.
    Events {
        events: Vec<WireEvent>,
    },
    /// Master → edge (passive sync): unsynced events of the edge's log
    /// after position `after`, at most `limit`, oldest first.
    UnsyncedEvents {
        after: i64,
        limit: u32,
    },
    /// Master → edge: these events are stored at the master; mark them
    /// synced.
    EventsSynced {
        ids: Vec<Uuid>,
    },
    /// Master → edge, on every connection: what the edge runs now (the
    /// edge's side of the negotiation facts).
    ControlReport,
    /// Master → edge: the edge controls its location from `epoch` on; it
    /// starts its modules (if they are not running) and then answers with
    /// its `ControlReport` (an older edge: `Done`). It runs to completion
    /// even if the request is cancelled; one under an epoch older than the
    /// edge's is not carried out, only answered with the edge's state.
    ControlAssume {
        epoch: u64,
        reason: String,
    },
    /// Master → edge: the master controls the location from `epoch` on;
    /// the edge stops its modules and closes its device connections, and
    /// only then answers (like an assume: with its report, to completion,
    /// and a late one only answered).
    ControlRelease {
        epoch: u64,
        reason: String,
    },
    /// Master → edge (version 2): another process authenticated as this
    /// edge, from `by`, and replaces this session. The edge stops its
    /// modules and only then answers; it then stands by and reconnects
    /// only after a back-off that grows, so two processes sharing an edge
    /// id never drive the site at once on a healthy link.
    Superseded {
        by: String,
    },
}

impl RequestBody {
    /// Every `kind` tag this build knows; a request whose tag is not here
    /// gets `UnknownKind`, one whose tag is here but fails to parse gets
    /// `BadRequest`.
    pub const KINDS: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    /// The `kind` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// The control epoch a request that acts on devices carries.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Self::Exec { epoch, .. }
            | Self::StartSystem { epoch, .. }
            | Self::StopSystem { epoch, .. } => *epoch,
            _ => None,
        }
    }
}

/// An exec request whose arguments are JSON text already (the API's
/// client sent them): it encodes exactly as [`RequestBody::Exec`] does, so
/// the peer cannot tell them apart, and the arguments are copied, never
/// parsed into values and encoded again.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename = "exec")]
pub struct ExecRaw<'a> {
    pub module: &'a str,
    pub method: &'a str,
    pub args: &'a serde_json::value::RawValue,
    pub epoch: Option<u64>,
}

impl ExecRaw<'_> {
    pub const KIND: &'static str = "exec";
}

/// Driver repository operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RepoOp {
    /// Master: `git fetch` and move to the upstream commit.
    Pull,
    /// Master: move to a named commit.
    Reset { commit: String },
    /// Edge: fetch this commit's files over the link, write them, reload.
    Sync { commit: String },
}

/// One file of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Git object id of the blob (hex).
    pub oid: String,
    pub size: u64,
    pub executable: bool,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseBody {
    /// Done, nothing to return.
    Done,
    /// A JSON value (an exec result, one status variable).
    Value { value: Value },
    /// Status variables of a module.
    Status {
        values: serde_json::Map<String, Value>,
    },
    /// The drivers that were reloaded.
    Reloaded { drivers: Vec<String> },
    /// The repository is at `commit`; `changed` lists the driver files that
    /// changed (edge sync) and were reloaded.
    Commit {
        commit: String,
        #[serde(default)]
        changed: Vec<String>,
    },
    Tree {
        commit: String,
        entries: Vec<TreeEntry>,
    },
    /// Blob bytes, base64 (standard alphabet, padded).
    Blob { data: String },
    /// A page of the master's change feed. `store_id` names the master's
    /// database: a replica that copied another one starts again from zero.
    Changes {
        store_id: Uuid,
        docs: Vec<DocChange>,
        /// The master's last committed sequence number when it answered.
        last_seq: i64,
        /// How far the page covers the feed: the edge's checkpoint moves
        /// here even when every change in between belonged to other sites.
        /// Absent from an older master (the last document's `seq` then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        through: Option<i64>,
        /// What this master replicates to this edge; absent from an older
        /// master, which sends every document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<ReplicaScope>,
    },
    /// A page of the edge's site (`SiteSnapshot`).
    SiteSnapshot {
        store_id: Uuid,
        docs: Vec<DocChange>,
        /// The master's last sequence number before it read the page: every
        /// change after it is in the feed.
        as_of: i64,
        /// Set on the last page: every id of the site, so the edge drops
        /// whatever else it holds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<Vec<Uuid>>,
    },
    /// A page of an edge's event log (passive sync).
    Events { events: Vec<WireEvent> },
    /// The answer to `ModuleState`: `loaded`, `running`, `stopped` or
    /// `failed` (with its reason), and the device connection.
    ModuleState {
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        has_device: bool,
        connected: bool,
    },
    /// The edge's answer to `ControlReport`.
    ControlReport {
        /// The edge runs its location's modules.
        running: bool,
        /// Devices of its location the edge reaches now.
        devices_connected: u32,
        /// The last epoch the edge was told (0: none yet).
        epoch: u64,
        /// An assume or release the edge is carrying out now (it runs to
        /// completion whatever happens to the request that started it).
        /// Absent from an older edge, whose report waits for it instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending: Option<PendingControl>,
    },
}

/// A change of controller an edge is carrying out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingControl {
    /// `true`: an assume (starting the site); `false`: a release (stopping it).
    pub assume: bool,
    /// The epoch it was sent under.
    pub epoch: u64,
}

/// One event recorded at an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub id: Uuid,
    pub at_ms: i64,
    #[serde(default)]
    pub module_id: Option<Uuid>,
    /// `status`, `exec`, `control` or `driver_error`.
    pub kind: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub epoch: Option<i64>,
    /// JSON text.
    pub body: String,
    /// Its position in the edge's log (in passive-sync pages).
    #[serde(default)]
    pub seq: Option<i64>,
}

/// One document (or tombstone) of the change feed, as the master stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChange {
    pub kind: String,
    pub id: Uuid,
    pub rev: i64,
    pub seq: i64,
    pub deleted: bool,
    #[serde(default)]
    pub owner: Option<Uuid>,
    /// The document's JSON text (`null` for a tombstone).
    pub body: String,
}

/// Which documents a master replicates to an edge (`replica_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaScope {
    /// Every document (seed 001's full copy).
    All,
    /// The edge's own site: its location, its systems, their modules, the
    /// API keys that may act on it.
    Site,
}

/// A one-way message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A line of a module's debug stream (sent while subscribed).
    Debug {
        module: String,
        level: String,
        message: String,
    },
    /// Master → edges: the data model changed up to `seq`; pull the changes
    /// after your checkpoint.
    DataModelUpdated { seq: i64 },
    /// Edge → master, just before a graceful stop (SIGTERM): the edge is
    /// going away on purpose and expects to be back (`restart`). The master
    /// records the stop as planned, and still waits the failover timeout.
    /// An older master ignores it (an unknown event).
    Stopping {
        #[serde(default)]
        restart: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's tag and strum's name come from two derives: they must agree
    /// for every kind, or a known request would be answered `unknown_kind`.
    #[test]
    fn every_kind_name_is_the_serde_tag() {
        let samples = [
            RequestBody::ControlReport,
            RequestBody::Exec {
                module: "m".into(),
                method: "f".into(),
                args: Value::Null,
                epoch: None,
            },
            RequestBody::UnsyncedEvents { after: 0, limit: 1 },
            RequestBody::ExpireSystemCache {
                system: Uuid::nil(),
            },
            RequestBody::SiteSnapshot {
                after_id: None,
                limit: 1,
            },
        ];
        for body in samples {
            let tag = serde_json::to_value(&body).unwrap()["kind"].clone();
            assert_eq!(tag, body.kind(), "{body:?}");
            assert!(RequestBody::KINDS.contains(&body.kind()));
        }
        assert_eq!(RequestBody::KINDS.len(), 21);
        assert!(RequestBody::KINDS.contains(&ExecRaw::KIND));
        for kind in RequestBody::KINDS {
            assert!(!kind.contains(char::is_uppercase), "{kind}");
        }
    }

    /// The API's pass-through exec must be the same bytes as the typed one.
    #[test]
    fn a_raw_exec_encodes_as_the_typed_one() {
        let args = r#"{"a":[1,2.5,"é"],"b":null}"#;
        for epoch in [None, Some(7)] {
            let typed = RequestBody::Exec {
                module: "m".into(),
                method: "f".into(),
                args: serde_json::from_str(args).unwrap(),
                epoch,
            };
            let raw_args = serde_json::value::RawValue::from_string(args.into()).unwrap();
            let raw = ExecRaw {
                module: "m",
                method: "f",
                args: &raw_args,
                epoch,
            };
            assert_eq!(
                serde_json::to_string(&raw).unwrap(),
                serde_json::to_string(&typed).unwrap()
            );
        }
    }

    /// A `changes` answer from a master that predates `through` and
    /// `scope` still reads (both absent), and they are left out when unset.
    #[test]
    fn changes_answers_read_without_the_site_fields() {
        let old = serde_json::json!({
            "kind": "changes", "store_id": Uuid::nil(), "docs": [], "last_seq": 7
        });
        let body: ResponseBody = serde_json::from_value(old.clone()).unwrap();
        let ResponseBody::Changes { through, scope, .. } = &body else {
            panic!("{body:?}")
        };
        assert_eq!((*through, *scope), (None, None));
        assert_eq!(serde_json::to_value(&body).unwrap(), old);
        let new = ResponseBody::Changes {
            store_id: Uuid::nil(),
            docs: vec![],
            last_seq: 7,
            through: Some(7),
            scope: Some(ReplicaScope::Site),
        };
        let value = serde_json::to_value(&new).unwrap();
        assert_eq!(
            (&value["through"], &value["scope"]),
            (&serde_json::json!(7), &serde_json::json!("site"))
        );
    }
}
