//! The data model: the three document kinds of the product (`EdgeLocation`,
//! `ControlSystem`, `Module`) plus `ApiKey`, their validation, and the whole-catalog rules
//! that need more than one document (references, module ownership).
//!
//! Documents are plain serde structs. The store knows nothing about them: it
//! keeps a kind, an id, a JSON body, an optional owner and a list of
//! referenced ids, which [`Doc::index`] derives here.

mod apikey;
mod catalog;
mod edge;
mod module;
pub mod secrets;
mod system;
mod validate;

pub use apikey::{ApiKey, KeyDigest, KeyRole, MIN_KEY_LEN};
pub use catalog::Catalog;
pub use edge::{EdgeLocation, RestoreWindow};
pub use module::{Endpoint, Module, check_driver_name};
pub use system::ControlSystem;
pub use validate::{FieldError, Invalid};

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// The kind under which each document type is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Edge,
    System,
    Module,
    ApiKey,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Edge, Kind::System, Kind::Module, Kind::ApiKey];

    /// The name used in the store and in import files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::System => "system",
            Kind::Module => "module",
            Kind::ApiKey => "api_key",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store indexes for a document: its owner (an edge location id for
/// systems, so "systems of an edge" is one indexed query) and the ids it
/// refers to (a system's modules, so "systems that list a module" is too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexKeys {
    pub owner: Option<Uuid>,
    pub refs: Vec<Uuid>,
}

/// Common behaviour of the three document types.
/// The kind and id accessor every document type has in the same words:
/// every document keeps its id in a field named `id`.
macro_rules! doc_identity {
    ($kind:expr) => {
        const KIND: Kind = $kind;

        fn id(&self) -> Uuid {
            self.id
        }
    };
}
pub(crate) use doc_identity;

pub trait Doc: Serialize + DeserializeOwned + Clone {
    const KIND: Kind;
    fn id(&self) -> Uuid;
    /// Field-level validation (no other documents needed).
    fn validate(&self, ctx: &ValidationContext) -> Result<(), Invalid>;
    /// Keys the store indexes for this document.
    fn index(&self) -> IndexKeys {
        IndexKeys::default()
    }
    /// The settings that may hold secrets (`model::secrets`), if any.
    fn settings(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// The same, writable, with the driver whose declared secrets apply.
    fn settings_mut(
        &mut self,
    ) -> Option<(
        &mut serde_json::Map<String, serde_json::Value>,
        Option<&str>,
    )> {
        None
    }
}

/// Facts from outside the document that validation needs.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// Driver files that exist (names relative to `modules/`, e.g. `pjlink.lua`).
    /// `None` skips the driver check (an edge validating replicated data, or a
    /// tool without the modules directory).
    pub drivers: Option<std::collections::BTreeSet<String>>,
    /// The modules directory `drivers` was read from: names are looked up
    /// there at each validation, so a driver file added since (a
    /// repository pull, a copy) is accepted at once.
    pub dir: Option<std::path::PathBuf>,
}

impl ValidationContext {
    /// Reads the driver names from a modules directory (files ending in `.lua`).
    pub fn with_modules_dir(dir: &std::path::Path) -> std::io::Result<Self> {
        let mut drivers = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lua") {
                    drivers.insert(name);
                }
            }
        }
        Ok(Self {
            drivers: Some(drivers),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// The settings the driver `name` declares secret (`model::secrets`);
    /// none when the directory or the file is not known here.
    pub fn declared_secrets(&self, name: &str) -> Vec<String> {
        if check_driver_name(name).is_err() {
            return Vec::new();
        }
        self.dir
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.join(name)).ok())
            .map(|text| secrets::declared_in(&text))
            .unwrap_or_default()
    }

    /// The driver file `name` exists: in the modules directory now when the
    /// context knows it (a driver added or removed since is seen at once),
    /// else in the list it was made with. `name` has passed
    /// `check_driver_name`, so it cannot leave the directory.
    pub fn has_driver(&self, name: &str) -> bool {
        match (&self.dir, &self.drivers) {
            (Some(dir), _) => dir.join(name).is_file(),
            (None, Some(drivers)) => drivers.contains(name),
            (None, None) => true,
        }
    }
}

/// A fresh document id: uuid v7, so ids sort by creation time and index well.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The index keys of a stored document's body (a replica derives them as the
/// master did). Tombstones (`null`) have none.
pub fn index_document(kind: &str, body: &str) -> Result<IndexKeys, String> {
    fn keys<D: Doc>(body: &str) -> Result<IndexKeys, String> {
        serde_json::from_str::<D>(body)
            .map(|d| d.index())
            .map_err(|e| e.to_string())
    }
    if body == "null" {
        return Ok(IndexKeys::default());
    }
    match Kind::parse(kind) {
        Some(Kind::Edge) => keys::<EdgeLocation>(body),
        Some(Kind::System) => keys::<ControlSystem>(body),
        Some(Kind::Module) => keys::<Module>(body),
        Some(Kind::ApiKey) => keys::<ApiKey>(body),
        None => Err(format!("unknown document kind '{kind}'")),
    }
}
