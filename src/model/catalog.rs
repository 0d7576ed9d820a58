//! A set of documents held in memory, and the rules that span documents:
//! references must exist, and a module belongs to exactly one owner (the
//! master or one edge location).

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::validate::{FieldError, Invalid};
use super::{ControlSystem, Doc, EdgeLocation, Kind, Module, ValidationContext};

/// Documents by id, ordered so that reports and exports are stable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub edges: BTreeMap<Uuid, EdgeLocation>,
    pub systems: BTreeMap<Uuid, ControlSystem>,
    pub modules: BTreeMap<Uuid, Module>,
}

/// Who owns a module: `None` is the master, `Some(edge)` an edge location.
pub(super) type Owner = Option<Uuid>;

impl Catalog {
    pub fn len(&self) -> usize {
        self.edges.len() + self.systems.len() + self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates every document and every cross-document rule, reporting all
    /// problems at once.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), Invalid> {
        let fields = Invalid::merge(
            self.edges
                .values()
                .map(|d| d.validate(ctx))
                .chain(self.systems.values().map(|d| d.validate(ctx)))
                .chain(self.modules.values().map(|d| d.validate(ctx))),
        );
        let refs = self.check_references();
        Invalid::merge([fields, refs])
    }

    /// References must point at existing documents, and no module may be
    /// listed by systems of two different owners.
    pub fn check_references(&self) -> Result<(), Invalid> {
        let mut errors = Vec::new();
        let mut owners: HashMap<Uuid, (Owner, Uuid)> = HashMap::new();
        for system in self.systems.values() {
            let fail = |errors: &mut Vec<FieldError>, field: String, message: String| {
                errors.push(FieldError {
                    kind: Kind::System.as_str(),
                    id: system.id,
                    field,
                    message,
                });
            };
            if let Some(edge) = system.edge_id
                && !self.edges.contains_key(&edge)
            {
                fail(
                    &mut errors,
                    "edge_id".into(),
                    format!("edge location {edge} does not exist"),
                );
            }
            for (i, module) in system.module_ids.iter().enumerate() {
                if !self.modules.contains_key(module) {
                    fail(
                        &mut errors,
                        format!("module_ids[{i}]"),
                        format!("module {module} does not exist"),
                    );
                    continue;
                }
                match owners.get(module) {
                    Some((owner, other)) if *owner != system.edge_id => fail(
                        &mut errors,
                        format!("module_ids[{i}]"),
                        format!(
                            "module {module} is already listed by system {other} of {}; \
                             a module cannot belong to {} as well",
                            describe_owner(*owner),
                            describe_owner(system.edge_id)
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        owners.insert(*module, (system.edge_id, system.id));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid { errors })
        }
    }

    /// The owner of every module listed by an edge's system. Modules not in
    /// the map belong to the master.
    pub fn edge_owned_modules(&self) -> HashMap<Uuid, Uuid> {
        let mut out = HashMap::new();
        for system in self.systems.values() {
            if let Some(edge) = system.edge_id {
                for module in &system.module_ids {
                    out.insert(*module, edge);
                }
            }
        }
        out
    }
}

fn describe_owner(owner: Owner) -> String {
    match owner {
        None => "the master".to_owned(),
        Some(edge) => format!("edge location {edge}"),
    }
}
