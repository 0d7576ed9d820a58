//! Administration: import a site file (validated, all or nothing) and export
//! the documents as stable JSON.
//!
//! The file format is the one `config/example-site.json` uses:
//! `{"edges": [...], "systems": [...], "modules": [...]}`; an export adds
//! each document's `rev`. Importing a document whose id exists replaces it
//! (unless it is unchanged; the careful import refuses one changed since
//! the file's `rev` without `force`); everything is checked against the
//! resulting catalog before one transaction writes it. New edge locations
//! get a fresh secret, returned once in the report (the store keeps only the
//! derived link key, outside the replicated documents).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    Catalog, ControlSystem, Doc, EdgeLocation, Invalid, Kind, Module, ValidationContext, secrets,
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
    // The cause is in the message: no `#[source]`, so an error chain
    // prints it once.
    #[error("the import file is not valid: {0}")]
    Parse(serde_json::Error),
    #[error("the import file lists {kind} {id} twice")]
    Duplicate { kind: &'static str, id: Uuid },
    #[error("id {id} is used by a {existing} and cannot become a {kind}")]
    KindClash {
        id: Uuid,
        existing: String,
        kind: &'static str,
    },
    #[error("validation failed: {0}")]
    Invalid(Invalid),
    #[error(
        "{} document(s) changed since the file was exported, or differ from it and carry no revision: {}; nothing was written (export again, or pass --force to overwrite them)",
        .0.len(), .0.join("; ")
    )]
    Stale(Vec<String>),
    #[error("the store changed during the import (nothing was written); run it again")]
    Concurrent(#[source] StoreError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<Invalid> for AdminError {
    fn from(e: Invalid) -> Self {
        AdminError::Invalid(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::Conflict { .. } => AdminError::Concurrent(e),
            e => AdminError::Store(e),
        }
    }
}

/// How to import a site file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Work out and report the changes; write nothing.
    pub dry_run: bool,
    /// Overwrite documents changed since the file was exported (or, for
    /// documents without a revision, any that differ from the file).
    pub force: bool,
    /// The revision each document carried in the file (`rev` in an export).
    pub revs: HashMap<Uuid, i64>,
}

/// What an import does to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Replace,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Replace => "replace",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One document of an import and what happens to it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub change: Change,
    pub kind: &'static str,
    pub id: Uuid,
    pub name: String,
}

/// What an import did (or, on a dry run, would do). `secrets` are shown
/// once and never again.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub created: usize,
    pub replaced: usize,
    pub unchanged: usize,
    /// Every document of the file, in the file's order.
    pub changes: Vec<Planned>,
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
    parse_site_with_revs(text).map(|(site, _)| site)
}

/// A document of a site file with the revision its export carried.
struct WithRev<D> {
    rev: Option<i64>,
    doc: D,
}

impl<'de, D: serde::de::DeserializeOwned> Deserialize<'de> for WithRev<D> {
    fn deserialize<De: serde::Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let rev = match map.remove("rev") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| De::Error::custom("rev must be an integer"))?,
            ),
        };
        let doc =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(De::Error::custom)?;
        Ok(WithRev { rev, doc })
    }
}

#[derive(Serialize)]
struct WithRevOut<'a, D> {
    rev: i64,
    #[serde(flatten)]
    doc: &'a D,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFileIn {
    #[serde(default)]
    edges: Vec<WithRev<EdgeLocation>>,
    #[serde(default)]
    systems: Vec<WithRev<ControlSystem>>,
    #[serde(default)]
    modules: Vec<WithRev<Module>>,
}

/// Parses a site file and the revisions its documents carry (an export
/// gives each its `rev`; a hand-written file may give none).
pub fn parse_site_with_revs(text: &str) -> Result<(SiteFile, HashMap<Uuid, i64>), AdminError> {
    let file: SiteFileIn = serde_json::from_str(text).map_err(AdminError::Parse)?;
    let mut revs = HashMap::new();
    fn take<D: Doc>(entries: Vec<WithRev<D>>, revs: &mut HashMap<Uuid, i64>) -> Vec<D> {
        entries
            .into_iter()
            .map(|e| {
                if let Some(rev) = e.rev {
                    revs.insert(e.doc.id(), rev);
                }
                e.doc
            })
            .collect()
    }
    let site = SiteFile {
        edges: take(file.edges, &mut revs),
        systems: take(file.systems, &mut revs),
        modules: take(file.modules, &mut revs),
    };
    Ok((site, revs))
}

/// Imports a site file: validates it against the store's current documents
/// and writes it in one transaction, or writes nothing. Overwrites
/// whatever the file replaces (see [`import_with`] for the careful way).
pub async fn import(
    store: &Store,
    site: &SiteFile,
    ctx: &ValidationContext,
) -> Result<ImportReport, AdminError> {
    let options = ImportOptions {
        force: true,
        ..ImportOptions::default()
    };
    import_with(store, site, ctx, &options).await
}

/// Where each document of the file goes, and the file's documents checked
/// against the store's.
struct Plan<'a> {
    revs: &'a HashMap<Uuid, (Kind, i64)>,
    ctx: &'a ValidationContext,
    options: &'a ImportOptions,
    seen: HashSet<Uuid>,
    report: ImportReport,
    stale: Vec<String>,
}

impl Plan<'_> {
    fn add<D: Doc>(&mut self, into: &mut BTreeMap<Uuid, D>, docs: &[D]) -> Result<(), AdminError> {
        for doc in docs {
            let id = doc.id();
            if !self.seen.insert(id) {
                return Err(AdminError::Duplicate {
                    kind: D::KIND.as_str(),
                    id,
                });
            }
            if let Some((kind, _)) = self.revs.get(&id)
                && *kind != D::KIND
            {
                return Err(AdminError::KindClash {
                    id,
                    existing: kind.to_string(),
                    kind: D::KIND.as_str(),
                });
            }
            // A re-imported export carries "<redacted>" (or nothing) for
            // secret settings: the stored values stay.
            let mut doc = doc.clone();
            let ctx = self.ctx;
            secrets::keep_doc(&mut doc, into.get(&id), &|d| ctx.declared_secrets(d));
            let new = serde_json::to_value(&doc).unwrap_or_default();
            let name = new["name"].as_str().unwrap_or_default().to_owned();
            let change = match into.insert(id, doc) {
                None => Change::Create,
                Some(old) if serde_json::to_value(&old).unwrap_or_default() == new => {
                    Change::Unchanged
                }
                Some(_) => Change::Replace,
            };
            let stored = self.revs.get(&id).map(|(_, rev)| *rev);
            let given = self.options.revs.get(&id).copied();
            if change == Change::Replace && given != stored && !self.options.force {
                let file = given.map_or("none".to_owned(), |r| r.to_string());
                let store = stored.map_or("none".to_owned(), |r| r.to_string());
                self.stale.push(format!(
                    "{} '{name}' ({id}) is at rev {store}, the file's rev is {file}",
                    D::KIND
                ));
            }
            match change {
                Change::Create => self.report.created += 1,
                Change::Replace => self.report.replaced += 1,
                Change::Unchanged => self.report.unchanged += 1,
            }
            self.report.changes.push(Planned {
                change,
                kind: D::KIND.as_str(),
                id,
                name,
            });
        }
        Ok(())
    }
}

/// Imports a site file as `options` say: validated against the store's
/// current documents and written in one transaction (or nothing); a
/// document changed since the file's export is refused unless `force`;
/// documents equal to the stored ones are left alone; a dry run only
/// reports.
pub async fn import_with(
    store: &Store,
    site: &SiteFile,
    ctx: &ValidationContext,
    options: &ImportOptions,
) -> Result<ImportReport, AdminError> {
    let (mut catalog, revs) = load_catalog(store).await?;
    let mut plan = Plan {
        revs: &revs,
        ctx,
        options,
        seen: HashSet::new(),
        report: ImportReport::default(),
        stale: Vec::new(),
    };
    plan.add(&mut catalog.edges, &site.edges)?;
    plan.add(&mut catalog.systems, &site.systems)?;
    plan.add(&mut catalog.modules, &site.modules)?;
    catalog.validate(ctx)?;
    if !plan.stale.is_empty() {
        return Err(AdminError::Stale(plan.stale));
    }
    let mut report = plan.report;
    if options.dry_run {
        return Ok(report);
    }
    let changed: HashSet<Uuid> = report
        .changes
        .iter()
        .filter(|p| p.change != Change::Unchanged)
        .map(|p| p.id)
        .collect();
    let expect = |id: Uuid| {
        revs.get(&id)
            .map_or(Expect::Absent, |(_, rev)| Expect::Rev(*rev))
    };
    let mut writes = Vec::with_capacity(changed.len() + site.edges.len());
    for edge in site.edges.iter().filter(|d| changed.contains(&d.id)) {
        let e = expect(edge.id);
        writes.push(Write::put(edge, e));
        if e == Expect::Absent {
            let secret = EdgeSecret::generate();
            writes.push(Write::SetCredential {
                id: edge.id,
                expect: Expect::Absent,
                link_key: secret.link_key(edge.id).as_bytes().to_vec(),
                grace_until_ms: None,
            });
            report.secrets.push((edge.id, edge.name.clone(), secret));
        }
    }
    // The catalog's copies: the file's documents with stored secrets kept.
    for module in site.modules.iter().filter(|d| changed.contains(&d.id)) {
        let module = catalog.modules.get(&module.id).unwrap_or(module);
        writes.push(Write::put(module, expect(module.id)));
    }
    for system in site.systems.iter().filter(|d| changed.contains(&d.id)) {
        let system = catalog.systems.get(&system.id).unwrap_or(system);
        writes.push(Write::put(system, expect(system.id)));
    }
    if !writes.is_empty() {
        store.apply(&writes).await?;
    }
    Ok(report)
}

/// Exports every live document as pretty JSON, ordered by id, so that two
/// exports of the same data are byte-identical. Each document carries its
/// `rev`, so that importing the file again refuses to overwrite documents
/// changed since. Secret settings are `"<redacted>"` (see [`export_with`]).
pub async fn export(store: &Store) -> Result<String, AdminError> {
    export_with(store, &ValidationContext::default(), false).await
}

/// [`export`], with `ctx` naming the drivers' declared secret settings;
/// `include_secrets` writes their values instead of `"<redacted>"` (the
/// caller then writes the file with mode 0600).
pub async fn export_with(
    store: &Store,
    ctx: &ValidationContext,
    include_secrets: bool,
) -> Result<String, AdminError> {
    let (mut catalog, revs) = load_catalog(store).await?;
    if !include_secrets {
        let declared = |d: &str| ctx.declared_secrets(d);
        for m in catalog.modules.values_mut() {
            secrets::redact_doc(m, &declared);
        }
        for s in catalog.systems.values_mut() {
            secrets::redact_doc(s, &declared);
        }
    }
    #[derive(Serialize)]
    struct SiteFileOut<'a> {
        edges: Vec<WithRevOut<'a, EdgeLocation>>,
        systems: Vec<WithRevOut<'a, ControlSystem>>,
        modules: Vec<WithRevOut<'a, Module>>,
    }
    let with_revs = |id: &Uuid| revs.get(id).map_or(0, |(_, rev)| *rev);
    let site = SiteFileOut {
        edges: catalog
            .edges
            .iter()
            .map(|(id, doc)| WithRevOut {
                rev: with_revs(id),
                doc,
            })
            .collect(),
        systems: catalog
            .systems
            .iter()
            .map(|(id, doc)| WithRevOut {
                rev: with_revs(id),
                doc,
            })
            .collect(),
        modules: catalog
            .modules
            .iter()
            .map(|(id, doc)| WithRevOut {
                rev: with_revs(id),
                doc,
            })
            .collect(),
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
/// secret keeps authenticating new link handshakes for `grace` (zero: it
/// stops at once, for a compromised secret); a running master closes the
/// edge's live session at once either way.
pub async fn rotate_secret(
    store: &Store,
    edge_id: Uuid,
    grace: std::time::Duration,
) -> Result<EdgeSecret, AdminError> {
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
            grace_until_ms: (!grace.is_zero())
                .then(|| crate::util::unix_ms().saturating_add(grace.as_millis() as i64)),
        }])
        .await?;
    Ok(secret)
}
