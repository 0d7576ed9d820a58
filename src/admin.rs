//! Administration: import a site file (validated, all or nothing) and export
//! the documents as stable JSON.
//!
//! The file format is the one `config/example-site.json` uses:
//! `{"edges": [...], "systems": [...], "modules": [...]}`. Importing a
//! document whose id exists replaces it; everything is checked against the
//! resulting catalog before one transaction writes it. New edge locations
//! get a fresh secret, returned once in the report (the store keeps only the
//! derived link key, outside the replicated documents).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    Catalog, ControlSystem, Doc, EdgeLocation, Invalid, Kind, Module, ValidationContext,
};
use crate::secret::EdgeSecret;
use crate::store::{Expect, Store, StoreError, Write};

/// The import / export file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    #[serde(default)]
    pub edges: Vec<EdgeLocation>,
    #[serde(default)]
    pub systems: Vec<ControlSystem>,
    #[serde(default)]
    pub modules: Vec<Module>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no edge location with id {0}")]
    NoSuchEdge(Uuid),
    #[error("the import file is not valid: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("the import file lists {kind} {id} twice")]
    Duplicate { kind: &'static str, id: Uuid },
    #[error("id {id} is used by a {existing} and cannot become a {kind}")]
    KindClash {
        id: Uuid,
        existing: String,
        kind: &'static str,
    },
    #[error("validation failed: {0}")]
    Invalid(#[from] Invalid),
    #[error("the store changed during the import (nothing was written); run it again")]
    Concurrent(#[source] StoreError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::Conflict { .. } => AdminError::Concurrent(e),
            e => AdminError::Store(e),
        }
    }
}

/// What an import did. `secrets` are shown once and never again.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub created: usize,
    pub replaced: usize,
    pub secrets: Vec<(Uuid, String, EdgeSecret)>,
}

/// Every live document and its revision.
pub async fn load_catalog(
    store: &Store,
) -> Result<(Catalog, HashMap<Uuid, (Kind, i64)>), StoreError> {
    let mut catalog = Catalog::default();
    let mut revs = HashMap::new();
    for doc in store.list_all(Kind::Edge).await? {
        revs.insert(doc.id, (Kind::Edge, doc.rev));
        catalog.edges.insert(doc.id, doc.parse()?);
    }
    for doc in store.list_all(Kind::System).await? {
        revs.insert(doc.id, (Kind::System, doc.rev));
        catalog.systems.insert(doc.id, doc.parse()?);
    }
    for doc in store.list_all(Kind::Module).await? {
        revs.insert(doc.id, (Kind::Module, doc.rev));
        catalog.modules.insert(doc.id, doc.parse()?);
    }
    Ok((catalog, revs))
}

/// Parses a site file, with the line and column of a syntax error.
pub fn parse_site(text: &str) -> Result<SiteFile, AdminError> {
    serde_json::from_str(text).map_err(AdminError::Parse)
}

/// Imports a site file: validates it against the store's current documents
/// and writes it in one transaction, or writes nothing.
pub async fn import(
    store: &Store,
    site: &SiteFile,
    ctx: &ValidationContext,
) -> Result<ImportReport, AdminError> {
    let (mut catalog, revs) = load_catalog(store).await?;

    fn insert_unique<D: Doc>(
        into: &mut BTreeMap<Uuid, D>,
        seen: &mut HashSet<Uuid>,
        revs: &HashMap<Uuid, (Kind, i64)>,
        docs: &[D],
    ) -> Result<(), AdminError> {
        for doc in docs {
            if !seen.insert(doc.id()) {
                return Err(AdminError::Duplicate {
                    kind: D::KIND.as_str(),
                    id: doc.id(),
                });
            }
            if let Some((kind, _)) = revs.get(&doc.id())
                && *kind != D::KIND
            {
                return Err(AdminError::KindClash {
                    id: doc.id(),
                    existing: kind.to_string(),
                    kind: D::KIND.as_str(),
                });
            }
            into.insert(doc.id(), doc.clone());
        }
        Ok(())
    }
    let mut seen = HashSet::new();
    insert_unique(&mut catalog.edges, &mut seen, &revs, &site.edges)?;
    insert_unique(&mut catalog.systems, &mut seen, &revs, &site.systems)?;
    insert_unique(&mut catalog.modules, &mut seen, &revs, &site.modules)?;
    catalog.validate(ctx)?;

    let mut report = ImportReport::default();
    let mut writes = Vec::with_capacity(seen.len() + site.edges.len());
    let expect = |id: Uuid, report: &mut ImportReport| match revs.get(&id) {
        Some((_, rev)) => {
            report.replaced += 1;
            Expect::Rev(*rev)
        }
        None => {
            report.created += 1;
            Expect::Absent
        }
    };
    for edge in &site.edges {
        let e = expect(edge.id, &mut report);
        writes.push(Write::put(edge, e));
        if e == Expect::Absent {
            let secret = EdgeSecret::generate();
            writes.push(Write::SetCredential {
                id: edge.id,
                expect: Expect::Absent,
                link_key: secret.link_key(edge.id).as_bytes().to_vec(),
            });
            report.secrets.push((edge.id, edge.name.clone(), secret));
        }
    }
    for module in &site.modules {
        let e = expect(module.id, &mut report);
        writes.push(Write::put(module, e));
    }
    for system in &site.systems {
        let e = expect(system.id, &mut report);
        writes.push(Write::put(system, e));
    }
    store.apply(&writes).await?;
    Ok(report)
}

/// Exports every live document as pretty JSON, ordered by id, so that two
/// exports of the same data are byte-identical.
pub async fn export(store: &Store) -> Result<String, AdminError> {
    let (catalog, _) = load_catalog(store).await?;
    let site = SiteFile {
        edges: catalog.edges.into_values().collect(),
        systems: catalog.systems.into_values().collect(),
        modules: catalog.modules.into_values().collect(),
    };
    #[allow(
        clippy::expect_used,
        reason = "documents are serde structs with string keys: serialising them cannot fail"
    )]
    let mut text = serde_json::to_string_pretty(&site).expect("documents always serialise");
    text.push('\n');
    Ok(text)
}

/// Gives an edge location a new secret and returns it (shown once). The old
/// secret stops working for new link handshakes at once.
pub async fn rotate_secret(store: &Store, edge_id: Uuid) -> Result<EdgeSecret, AdminError> {
    match store.get(edge_id).await? {
        Some(doc) if doc.kind == Kind::Edge.as_str() => {}
        _ => return Err(AdminError::NoSuchEdge(edge_id)),
    }
    // The key replaced is the one read here: a concurrent rotation or
    // delete makes this one a conflict instead of a silent overwrite.
    let expect = store
        .credential_rev(edge_id)
        .await?
        .map_or(Expect::Absent, Expect::Rev);
    let secret = EdgeSecret::generate();
    store
        .apply(&[Write::SetCredential {
            id: edge_id,
            expect,
            link_key: secret.link_key(edge_id).as_bytes().to_vec(),
        }])
        .await?;
    Ok(secret)
}
