//! Control state and the control audit log: who holds each edge location,
//! its epoch, and every change of controller. Not part of the change feed:
//! each side keeps its own record, and epochs travel with link requests.

use uuid::Uuid;

use super::cluster::FenceCheck;
use super::{Store, StoreError, on_reader, on_writer, sql};
use crate::control::{Reason, Side};

/// Who holds a location now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlState {
    pub edge_id: Uuid,
    pub controller: Side,
    /// Goes up by one at every change of controller; 1 for the first.
    pub epoch: i64,
    /// When the controller took over (milliseconds since the Unix epoch).
    pub since_ms: i64,
}

/// An operator's action on a site that is not a change of controller
/// (`maintenance_on`, `maintenance_off`), as the site audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAction {
    pub edge_id: Uuid,
    pub at_ms: i64,
    pub action: String,
    /// The API key's user who did it.
    pub by: Option<String>,
}

/// One change of controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    pub id: Uuid,
    pub edge_id: Uuid,
    pub epoch: i64,
    /// `None` for the first controller a location ever had.
    pub from: Option<Side>,
    pub to: Side,
    pub reason: Reason,
    pub at_ms: i64,
    /// Who asked for the change (a restore: the API key's user); `None`
    /// for the control loop's own decisions.
    pub by: Option<String>,
}

type StateRow = (String, String, i64, i64);
type LogRow = (
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
    i64,
    Option<String>,
);

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt {
        id: Uuid::nil(),
        reason: format!("control data: bad {what} '{value}'"),
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| corrupt("id", s))
}

fn parse_side(s: &str) -> Result<Side, StoreError> {
    Side::parse(s).ok_or_else(|| corrupt("side", s))
}

fn to_state(row: StateRow) -> Result<ControlState, StoreError> {
    Ok(ControlState {
        edge_id: parse_uuid(&row.0)?,
        controller: parse_side(&row.1)?,
        epoch: row.2,
        since_ms: row.3,
    })
}

fn to_record(row: LogRow) -> Result<ControlRecord, StoreError> {
    Ok(ControlRecord {
        id: parse_uuid(&row.0)?,
        edge_id: parse_uuid(&row.1)?,
        epoch: row.2,
        from: row.3.as_deref().map(parse_side).transpose()?,
        to: parse_side(&row.4)?,
        reason: Reason::parse(&row.5).ok_or_else(|| corrupt("reason", &row.5))?,
        at_ms: row.6,
        by: row.7,
    })
}

impl Store {
    /// Who controls `edge_id`, if anyone has yet.
    pub async fn control_state(&self, edge_id: Uuid) -> Result<Option<ControlState>, StoreError> {
        let row: Option<StateRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::GET_STATE).bind(edge_id.to_string()).fetch_optional(pool).await?
        });
        row.map(to_state).transpose()
    }

    /// Every location's control state (a master resuming after a restart).
    pub async fn control_states(&self) -> Result<Vec<ControlState>, StoreError> {
        let rows: Vec<StateRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::ALL_STATES).fetch_all(pool).await?
        });
        rows.into_iter().map(to_state).collect()
    }

    /// Hands control of `edge_id` to `to` if its epoch is still
    /// `expected_epoch` (`None`: no controller recorded yet). The epoch goes
    /// up by one and the change is appended to the audit log in the same
    /// transaction. A moved epoch is [`StoreError::EpochConflict`]: someone
    /// else changed control first, and this decision is stale.
    pub async fn change_controller(
        &self,
        edge_id: Uuid,
        expected_epoch: Option<i64>,
        to: Side,
        reason: Reason,
        at_ms: i64,
    ) -> Result<ControlRecord, StoreError> {
        let id_text = edge_id.to_string();
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let previous: Option<StateRow> = sqlx::query_as(sql::GET_STATE)
                .bind(&id_text)
                .fetch_optional(&mut *tx)
                .await?;
            let epoch: Option<i64> = match expected_epoch {
                None => sqlx::query_scalar(sql::INSERT_STATE)
                    .bind(&id_text)
                    .bind(to.as_str())
                    .bind(at_ms)
                    .fetch_optional(&mut *tx)
                    .await?,
                Some(expected) => sqlx::query_scalar(sql::UPDATE_STATE)
                    .bind(&id_text)
                    .bind(to.as_str())
                    .bind(at_ms)
                    .bind(expected)
                    .fetch_optional(&mut *tx)
                    .await?,
            };
            let Some(epoch) = epoch else {
                // Read again: `previous` may predate the change that beat us.
                let actual: Option<StateRow> = sqlx::query_as(sql::GET_STATE)
                    .bind(&id_text)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(StoreError::EpochConflict {
                    edge_id,
                    expected: expected_epoch,
                    actual: actual.map(|p| p.2),
                });
            };
            let record = ControlRecord {
                id: Uuid::now_v7(),
                edge_id,
                epoch,
                from: previous.map(|p| parse_side(&p.1)).transpose()?,
                to,
                reason,
                at_ms,
                by: None,
            };
            sqlx::query(sql::INSERT_LOG)
                .bind(record.id.to_string())
                .bind(&id_text)
                .bind(epoch)
                .bind(record.from.map(Side::as_str))
                .bind(to.as_str())
                .bind(reason.as_str())
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
            let _ = self.control_changes.send(record.clone());
            Ok(record)
        })
    }

    /// Records a decision made elsewhere (the master's, at an edge): `to`
    /// controls `edge_id` from `epoch` on. An older epoch than the one
    /// recorded is [`StoreError::EpochConflict`] (a stale decision); the
    /// same epoch and controller again changes nothing and returns `None`.
    pub(crate) async fn adopt_controller(
        &self,
        edge_id: Uuid,
        to: Side,
        epoch: i64,
        reason: Reason,
        at_ms: i64,
    ) -> Result<Option<ControlRecord>, StoreError> {
        let id_text = edge_id.to_string();
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let previous: Option<StateRow> = sqlx::query_as(sql::GET_STATE)
                .bind(&id_text)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(p) = &previous {
                if p.2 > epoch {
                    return Err(StoreError::EpochConflict {
                        edge_id,
                        expected: Some(epoch),
                        actual: Some(p.2),
                    });
                }
                if p.2 == epoch && p.1 == to.as_str() {
                    return Ok(None);
                }
            }
            sqlx::query(sql::ADOPT_STATE)
                .bind(&id_text)
                .bind(to.as_str())
                .bind(epoch)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            let record = ControlRecord {
                id: Uuid::now_v7(),
                edge_id,
                epoch,
                from: previous.map(|p| parse_side(&p.1)).transpose()?,
                to,
                reason,
                at_ms,
                by: None,
            };
            // One record per epoch: a repeated epoch (said again after a
            // lost answer) keeps the first.
            let exists: Option<i64> = sqlx::query_scalar(sql::LOG_HAS_EPOCH)
                .bind(&id_text)
                .bind(epoch)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                sqlx::query(sql::INSERT_LOG)
                    .bind(record.id.to_string())
                    .bind(&id_text)
                    .bind(epoch)
                    .bind(record.from.map(Side::as_str))
                    .bind(to.as_str())
                    .bind(reason.as_str())
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            let _ = self.control_changes.send(record.clone());
            Ok(Some(record))
        })
    }

    /// Records who asked for the change of controller of `edge_id` at
    /// `epoch` (a restore's API key user) in the audit log.
    pub async fn record_control_author(
        &self,
        edge_id: Uuid,
        epoch: i64,
        user: &str,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::SET_LOG_AUTHOR)
                .bind(edge_id.to_string())
                .bind(epoch)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Appends an operator's action on `edge_id` to the site audit log.
    pub async fn record_site_action(
        &self,
        edge_id: Uuid,
        action: &str,
        at_ms: i64,
        by: Option<&str>,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::INSERT_SITE_ACTION)
                .bind(edge_id.to_string())
                .bind(at_ms)
                .bind(action)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records that `edge_id`'s link is up to `node_id` while that node
    /// holds its site (see [`Store::edge_links`]).
    pub async fn record_edge_link(
        &self,
        edge_id: Uuid,
        node_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::RECORD_EDGE_LINK)
                .bind(edge_id.to_string())
                .bind(node_id)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Forgets `edge_id`'s link to `node_id` (it ended).
    pub async fn forget_edge_link(&self, edge_id: Uuid, node_id: &str) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::FORGET_EDGE_LINK)
                .bind(edge_id.to_string())
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The edges whose link was up to a node holding their site when last
    /// recorded, with that node: when the link ended, the edge ran its site
    /// on its own.
    pub async fn edge_links(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows: Vec<(String, String)> = on_reader!(self, pool => {
            sqlx::query_as(sql::EDGE_LINKS).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, node)| Ok((parse_uuid(&id)?, node)))
            .collect()
    }

    /// The site audit log of `edge_id`, newest first, at most `limit`.
    pub async fn site_actions(
        &self,
        edge_id: Uuid,
        limit: u32,
    ) -> Result<Vec<SiteAction>, StoreError> {
        let rows: Vec<(String, i64, String, Option<String>)> = on_reader!(self, pool => {
            sqlx::query_as(sql::SITE_ACTIONS)
                .bind(edge_id.to_string())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(SiteAction {
                    edge_id: parse_uuid(&r.0)?,
                    at_ms: r.1,
                    action: r.2,
                    by: r.3,
                })
            })
            .collect()
    }

    /// The sites in maintenance now, with since when (ms).
    pub async fn sites_in_maintenance(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = on_reader!(self, pool => {
            sqlx::query_as(sql::IN_MAINTENANCE).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, at)| Ok((parse_uuid(&id)?, at)))
            .collect()
    }

    /// Per site, how its edge's newest recorded stop went
    /// (`planned_stop` or `lost_stop`) and when; and per site, when its
    /// edge last stopped on purpose. The control loop records planned
    /// stops, and a loss only after a planned one, so the newest record
    /// says how the last stop went.
    #[allow(clippy::type_complexity, reason = "two plain lists of rows")]
    pub async fn last_stops(
        &self,
    ) -> Result<(Vec<(Uuid, String, i64)>, Vec<(Uuid, i64)>), StoreError> {
        let (last, planned): (Vec<(String, String, i64)>, Vec<(String, i64)>) = on_reader!(self, pool => {
            (
                sqlx::query_as(sql::LAST_STOPS).fetch_all(pool).await?,
                sqlx::query_as(sql::LAST_PLANNED_STOPS).fetch_all(pool).await?,
            )
        });
        let last = last
            .into_iter()
            .map(|(id, how, at)| Ok((parse_uuid(&id)?, how, at)))
            .collect::<Result<_, StoreError>>()?;
        let planned = planned
            .into_iter()
            .map(|(id, at)| Ok((parse_uuid(&id)?, at)))
            .collect::<Result<_, StoreError>>()?;
        Ok((last, planned))
    }

    /// The audit log of `edge_id`, newest first: `limit` records with an
    /// epoch below `before_epoch` (`None`: from the newest).
    pub async fn control_log(
        &self,
        edge_id: Uuid,
        before_epoch: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ControlRecord>, StoreError> {
        let rows: Vec<LogRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::LOG_PAGE)
                .bind(edge_id.to_string())
                .bind(before_epoch.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_record).collect()
    }
}
