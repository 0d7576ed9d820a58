//! Which site a document belongs to: the one place that answers "is this
//! system or module part of edge location X's site?". The link's per-site
//! authorization (`master/authorize.rs`) asks it for every request an edge
//! sends, and the per-site replica (`master/replica.rs`) selects its
//! documents by the same rule, with indexed reads of the site alone.
//!
//! The rule, in the store's own terms (owners and references, no document
//! fields): a system belongs to the location that owns it (no owner: the
//! master's own); a module belongs to the owners of the live systems that
//! list it (the catalog allows only one).

use std::collections::HashSet;

use uuid::Uuid;

use super::{DocRow, Document, Store, StoreError, on_reader, parse_id, sql, to_documents};
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

    /// The ids of the documents of `edge`'s site: its location, its
    /// systems, the modules they list.
    pub async fn site_ids(&self, edge: Uuid) -> Result<HashSet<Uuid>, StoreError> {
        let ids: Vec<String> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::SITE_IDS)
                .bind(edge.to_string())
                .bind(Kind::Edge.as_str())
                .bind(Kind::System.as_str())
                .fetch_all(pool)
                .await?
        });
        ids.iter().map(|id| parse_id(id)).collect()
    }

    /// `edge`'s site documents with an id above `after`, in id order, at
    /// most `limit` (without repeats), and whether that is all of them.
    pub async fn site_page(
        &self,
        edge: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<Document>, bool), StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::SITE_PAGE)
                .bind(edge.to_string())
                .bind(Kind::Edge.as_str())
                .bind(Kind::System.as_str())
                .bind(after.map(|a| a.to_string()).unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        let complete = rows.len() < limit as usize;
        let mut docs = to_documents(rows)?;
        // A module listed by two systems of the site comes twice.
        docs.dedup_by_key(|d| d.id);
        Ok((docs, complete))
    }
}
