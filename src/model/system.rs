//! `ControlSystem`: a room or area, an ordered list of modules, and the edge
//! location that owns it (none: the master).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::validate::{Checker, Invalid};
use super::{Doc, IndexKeys, Kind, ValidationContext};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlSystem {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Set: the system belongs to that edge location. Absent: to the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<Uuid>,
    /// Ordered; a module may appear in several systems of the same owner.
    #[serde(default)]
    pub module_ids: Vec<Uuid>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Set by `POST /api/v1/systems/{id}/stop`, cleared by `…/start`: the
    /// system's modules do not run (unless another running system lists
    /// them). Replicated like any field, so a stop holds across restarts,
    /// hand-overs and the edge's replica.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

impl Doc for ControlSystem {
    super::doc_identity!(Kind::System);

    fn settings(&self) -> Option<&Map<String, Value>> {
        Some(&self.settings)
    }

    fn settings_mut(&mut self) -> Option<(&mut Map<String, Value>, Option<&str>)> {
        Some((&mut self.settings, None))
    }

    fn validate(&self, _ctx: &ValidationContext) -> Result<(), Invalid> {
        let mut c = Checker::new(Self::KIND, self.id);
        c.name("name", &self.name);
        let mut seen = std::collections::HashSet::with_capacity(self.module_ids.len());
        for (i, m) in self.module_ids.iter().enumerate() {
            if !seen.insert(*m) {
                c.fail(
                    &format!("module_ids[{i}]"),
                    format!("module {m} is listed twice"),
                );
            }
        }
        c.finish()
    }

    fn index(&self) -> IndexKeys {
        let mut refs = self.module_ids.clone();
        refs.sort_unstable();
        refs.dedup();
        IndexKeys {
            owner: self.edge_id,
            refs,
        }
    }
}
