//! Which site a document belongs to: the one place that answers "is this
//! system or module part of edge location X's site?". The link's per-site
//! authorization (`master/authorize.rs`) asks it for every request an edge
//! sends; a per-site replica would select its documents by the same rule.
//!
//! The rule, in the store's own terms (owners and references, no document
//! fields): a system belongs to the location that owns it (no owner: the
//! master's own); a module belongs to the owners of the live systems that
//! list it (the catalog allows only one).

use uuid::Uuid;

use super::{Store, StoreError, on_reader, sql};
use crate::model::Kind;

/// The site a system or module belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Systems without an edge location, and their modules: the master runs them.
    Master,
    /// The site of this edge location.
    Edge(Uuid),
}

impl Site {
    fn from_owner(id: Uuid, owner: Option<String>) -> Result<Self, StoreError> {
        match owner {
            None => Ok(Site::Master),
            Some(text) => Uuid::parse_str(&text)
                .map(Site::Edge)
                .map_err(|e| StoreError::Corrupt {
                    id,
                    reason: format!("bad owner '{text}': {e}"),
                }),
        }
    }
}

impl Store {
    /// The sites of the live systems that list `module` (empty: it is in
    /// no system, or does not exist), without duplicates.
    pub async fn module_sites(&self, module: Uuid) -> Result<Vec<Site>, StoreError> {
        let owners: Vec<Option<String>> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::MODULE_OWNERS)
                .bind(module.to_string())
                .bind(Kind::System.as_str())
                .fetch_all(pool)
                .await?
        });
        let mut sites = Vec::with_capacity(owners.len());
        for owner in owners {
            let site = Site::from_owner(module, owner)?;
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        Ok(sites)
    }

    /// The site of a live system (`None`: no such system).
    pub async fn system_site(&self, system: Uuid) -> Result<Option<Site>, StoreError> {
        let owner: Option<Option<String>> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::SYSTEM_OWNER)
                .bind(system.to_string())
                .bind(Kind::System.as_str())
                .fetch_optional(pool)
                .await?
        });
        owner.map(|o| Site::from_owner(system, o)).transpose()
    }
}
