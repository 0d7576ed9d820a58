//! Event logs. At an edge: status changes, exec results, control changes
//! and driver errors, each marked synced once the master acknowledged it;
//! the log is bounded and drops the oldest status changes first, never
//! control changes. At the master: every edge's events, idempotent by id,
//! with a per-edge passive-sync cursor moved in the same transaction, each
//! stamped with when the master stored it (by the master's clock, which
//! the caller passes in: retention counts from there, never from the
//! edge's own stamp).

use uuid::Uuid;

use super::cluster::FenceCheck;
use super::{Store, StoreError, on_reader, on_writer, sql};

/// What an event records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A status variable changed (coalesced per module and key while unsynced).
    Status,
    /// An exec finished.
    Exec,
    /// Control of the location changed (never dropped).
    Control,
    /// A driver failed.
    DriverError,
    /// A kind this build does not know (a newer edge's): kept as it came,
    /// opaque, so nothing a newer peer records is lost.
    Other(String),
}

impl EventKind {
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Status => "status",
            EventKind::Exec => "exec",
            EventKind::Control => "control",
            EventKind::DriverError => "driver_error",
            EventKind::Other(kind) => kind,
        }
    }

    /// The kind named `s`; a name this build does not know is
    /// [`EventKind::Other`].
    pub fn parse(s: &str) -> EventKind {
        [
            EventKind::Status,
            EventKind::Exec,
            EventKind::Control,
            EventKind::DriverError,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .unwrap_or_else(|| EventKind::Other(s.to_owned()))
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Uuid,
    pub edge_id: Uuid,
    pub at_ms: i64,
    pub module_id: Option<Uuid>,
    pub kind: EventKind,
    /// The status key, for status changes.
    pub key: Option<String>,
    /// The control epoch of the side that recorded it.
    pub epoch: Option<i64>,
    /// JSON text.
    pub body: String,
}

/// An event with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub synced: bool,
    pub event: Event,
    /// At the master: why the event was refused (it was not produced while
    /// its edge controlled the location); stored all the same. `None`:
    /// accepted.
    pub refused: Option<String>,
}

type EventRow = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    String,
    bool,
    Option<String>,
);

/// Rows per multi-row statement (11 parameters each for an insert). One
/// statement per event made a batch of a thousand cost a thousand round
/// trips to SQLite's connection thread; one statement per batch is worse
/// still, because binding `$N` parameters costs SQLite a walk of the
/// statement's parameter list per parameter (quadratic: 500 rows, 4,500
/// parameters, spent half of a passive-sync pass in
/// `sqlite3_bind_parameter_name`). A few dozen rows keep binding cheap
/// (benches/replication.rs, passive case).
const ROWS_PER_STATEMENT: usize = 25;

/// Rows one retention transaction deletes at most.
const PRUNE_BATCH: i64 = 10_000;

fn to_logged(row: EventRow) -> Result<LoggedEvent, StoreError> {
    let bad = |what: &str, v: &str| StoreError::Corrupt {
        id: Uuid::nil(),
        reason: format!("event log: bad {what} '{v}'"),
    };
    let uuid = |v: &str| Uuid::parse_str(v).map_err(|_| bad("id", v));
    Ok(LoggedEvent {
        seq: row.0,
        synced: row.9,
        event: Event {
            id: uuid(&row.1)?,
            edge_id: uuid(&row.2)?,
            at_ms: row.3,
            module_id: row.4.as_deref().map(uuid).transpose()?,
            kind: EventKind::parse(&row.5),
            key: row.6,
            epoch: row.7,
            body: row.8,
        },
        refused: row.10,
    })
}

/// Binds one event's columns as a row of [`sql::INSERT_EVENTS_HEAD`]:
/// `stored_ms` is when the master stored it (by the master's clock), `None`
/// in an edge's own log.
fn push_event<DB>(
    mut row: sqlx::query_builder::Separated<'_, DB, &'static str>,
    e: &Event,
    synced: bool,
    refused: Option<&str>,
    stored_ms: Option<i64>,
) where
    DB: sqlx::Database,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    row.push_bind(e.id.to_string())
        .push_bind(e.edge_id.to_string())
        .push_bind(e.at_ms)
        .push_bind(e.module_id.map(|m| m.to_string()))
        .push_bind(e.kind.as_str().to_owned())
        .push_bind(e.key.clone())
        .push_bind(e.epoch)
        .push_bind(e.body.clone())
        .push_bind(synced)
        .push_bind(refused.map(str::to_owned))
        .push_bind(stored_ms);
}

/// Order in which a full log gives up rows: status changes first (they are
/// superseded by newer values anyway), then exec results and driver errors.
/// Control changes are never dropped.
const DROP_ORDER: [EventKind; 3] = [EventKind::Status, EventKind::Exec, EventKind::DriverError];

/// What one append to the edge's log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Events newly in the log (an id already there is not added twice;
    /// a status change replaced by a newer one in the same batch is not
    /// added at all).
    pub added: u64,
    /// Older events given up because the log was full.
    pub dropped: u64,
    /// Rows in the log after the append.
    pub size: i64,
}

impl Event {
    /// The module and key by which a status change is coalesced with the
    /// others of its pair while unsynced; `None` for any other event.
    pub fn status_pair(&self) -> Option<(Uuid, &str)> {
        match (&self.kind, self.module_id, &self.key) {
            (EventKind::Status, Some(m), Some(k)) => Some((m, k.as_str())),
            _ => None,
        }
    }
}

/// The events of a batch worth storing: a status change followed in the
/// same batch by another of its module and key is superseded before it is
/// stored (what the log's coalescing would do to it anyway).
pub fn coalesce(events: &[Event]) -> Vec<&Event> {
    let mut last = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(pair) = e.status_pair() {
            last.insert(pair, i);
        }
    }
    let superseded =
        |i: usize, e: &Event| e.status_pair().is_some_and(|p| last.get(&p) != Some(&i));
    let kept = events
        .iter()
        .enumerate()
        .filter(|(i, e)| !superseded(*i, e));
    kept.map(|(_, e)| e).collect()
}

/// A status pair as the log's columns hold it.
fn status_columns(e: &Event) -> Option<(String, String)> {
    e.status_pair()
        .map(|(module, key)| (module.to_string(), key.to_owned()))
}

/// Deletes up to `$excess` rows of a full log inside `$tx`: synced rows
/// first, then unsynced ones in [`DROP_ORDER`]. Evaluates to (rows deleted,
/// of which unsynced, counted as dropped).
macro_rules! trim_log {
    ($tx:expr, $excess:expr) => {{
        let mut excess: i64 = $excess;
        let mut deleted = 0i64;
        let mut dropped = 0i64;
        if excess > 0 {
            let n = sqlx::query(sql::TRIM_SYNCED)
                .bind(excess)
                .execute(&mut *$tx)
                .await?
                .rows_affected() as i64;
            excess -= n;
            deleted += n;
        }
        for kind in DROP_ORDER {
            if excess <= 0 {
                break;
            }
            let n = sqlx::query(sql::TRIM_UNSYNCED_KIND)
                .bind(excess)
                .bind(kind.as_str())
                .execute(&mut *$tx)
                .await?
                .rows_affected() as i64;
            excess -= n;
            deleted += n;
            dropped += n;
        }
        if dropped > 0 {
            sqlx::query(sql::ADD_DROPPED)
                .bind(dropped)
                .execute(&mut *$tx)
                .await?;
        }
        (deleted, dropped)
    }};
}

impl Store {
    /// Edge: appends a batch of events to the local log, unsynced, in one
    /// transaction. An unsynced status change for the same module and key is
    /// replaced (coalesced). When the log holds more than `max_events`,
    /// synced rows go first, then the oldest unsynced status changes, exec
    /// results and driver errors; those are counted as dropped. The log's
    /// size is counted once per process and then kept by the appends, not
    /// recounted.
    pub async fn append_events(
        &self,
        events: &[Event],
        max_events: u64,
    ) -> Result<Appended, StoreError> {
        use std::sync::atomic::Ordering;
        let kept = coalesce(events);
        if kept.is_empty() {
            return Ok(Appended::default());
        }
        let pairs: Vec<(String, String)> = kept.iter().filter_map(|e| status_columns(e)).collect();
        let known = self.event_log_size.load(Ordering::Acquire);
        let max = i64::try_from(max_events).unwrap_or(i64::MAX);
        let (before, added, deleted, dropped) = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let before: i64 = if known >= 0 {
                known
            } else {
                sqlx::query_scalar(sql::COUNT_EVENTS).fetch_one(&mut *tx).await?
            };
            let mut deleted = 0i64;
            for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
                deleted += sql::delete_coalesced(chunk).build().execute(&mut *tx).await?.rows_affected() as i64;
            }
            let mut added = 0i64;
            for chunk in kept.chunks(ROWS_PER_STATEMENT) {
                let mut q = sql::values(sql::INSERT_EVENTS_HEAD, chunk, |row, e| push_event(row, e, false, None, None), sql::INSERT_EVENTS_TAIL);
                added += q.build_query_scalar::<i64>().fetch_all(&mut *tx).await?.len() as i64;
            }
            let (trimmed, dropped) = trim_log!(tx, before + added - deleted - max);
            tx.commit().await?;
            (before, added, deleted + trimmed, dropped)
        });
        let delta = added - deleted;
        // Another append may have moved the count meanwhile: add, never set,
        // once it is known.
        let size = match self.event_log_size.compare_exchange(
            -1,
            before + delta,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => before + delta,
            Err(_) => self.event_log_size.fetch_add(delta, Ordering::AcqRel) + delta,
        };
        if dropped > 0 {
            metrics::counter!("outpost_events_dropped_total").increment(dropped as u64);
        }
        Ok(Appended {
            added: added as u64,
            dropped: dropped as u64,
            size,
        })
    }

    /// Edge: appends one event (see [`Store::append_events`]) and returns
    /// its place in the log (an id already in the log keeps its place).
    pub async fn log_event(&self, event: &Event, max_events: u64) -> Result<i64, StoreError> {
        self.append_events(std::slice::from_ref(event), max_events)
            .await?;
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::EVENT_SEQ)
                .bind(event.id.to_string())
                .fetch_one(pool)
                .await?
        }))
    }

    /// Benchmark baseline only (`benches/robust.rs`): the log as it was
    /// written before batching, one transaction per event with a
    /// `COUNT(*)` of the whole log in each. Does not keep the size counter.
    #[doc(hidden)]
    pub async fn log_event_counting(
        &self,
        event: &Event,
        max_events: u64,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some((module, key)) = status_columns(event) {
                sqlx::query(sql::DELETE_COALESCED).bind(module).bind(key).execute(&mut *tx).await?;
            }
            sqlx::query_scalar::<_, i64>(sql::INSERT_EVENT)
                .bind(event.id.to_string())
                .bind(event.edge_id.to_string())
                .bind(event.at_ms)
                .bind(event.module_id.map(|m| m.to_string()))
                .bind(event.kind.as_str())
                .bind(&event.key)
                .bind(event.epoch)
                .bind(&event.body)
                .bind(false)
                .fetch_optional(&mut *tx)
                .await?;
            let count: i64 = sqlx::query_scalar(sql::COUNT_EVENTS).fetch_one(&mut *tx).await?;
            let max = i64::try_from(max_events).unwrap_or(i64::MAX);
            trim_log!(tx, count - max);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Edge: unsynced events after `after_seq`, oldest first.
    pub async fn unsynced_events(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows: Vec<EventRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::UNSYNCED_EVENTS)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(to_logged).collect()
    }

    /// Edge: marks events as acknowledged by the master.
    pub async fn mark_synced(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                sql::id_list(sql::MARK_SYNCED_HEAD, chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Edge: (events not yet synced, events dropped because the log was full).
    pub async fn event_counts(&self) -> Result<(i64, i64), StoreError> {
        Ok(on_reader!(self, pool => {
            let unsynced: i64 = sqlx::query_scalar(sql::COUNT_UNSYNCED).fetch_one(pool).await?;
            let dropped: i64 = sqlx::query_scalar(sql::GET_DROPPED).fetch_one(pool).await?;
            (unsynced, dropped)
        }))
    }

    /// Master: stores events received from an edge, each at most once (by
    /// id), and moves that edge's passive-sync cursor to `cursor` in the same
    /// transaction, so a kill at any point neither loses nor repeats one.
    /// `stored_ms` is the master's clock now (the clock retention reads):
    /// [`Store::prune_events`] judges age by it, not by the edge's `at_ms`.
    /// An event already stored keeps its first `stored_ms`. Returns how many
    /// events were new.
    pub async fn collect_events(
        &self,
        edge_id: Uuid,
        events: &[Event],
        cursor: Option<i64>,
        stored_ms: i64,
    ) -> Result<usize, StoreError> {
        let judged: Vec<(&Event, Option<&str>)> = events.iter().map(|e| (e, None)).collect();
        self.collect_judged(edge_id, &judged, cursor, stored_ms)
            .await
    }

    /// [`Store::collect_events`], each event with why it was refused
    /// (`None`: accepted): refused events are stored too, marked.
    pub async fn collect_judged(
        &self,
        edge_id: Uuid,
        events: &[(&Event, Option<&str>)],
        cursor: Option<i64>,
        stored_ms: i64,
    ) -> Result<usize, StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut new = 0;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut q = sql::values(sql::INSERT_EVENTS_HEAD, chunk, |row, (e, refused)| push_event(row, e, true, *refused, Some(stored_ms)), sql::INSERT_EVENTS_TAIL);
                new += q.build_query_scalar::<i64>().fetch_all(&mut *tx).await?.len();
            }
            if let Some(cursor) = cursor {
                sqlx::query(sql::SET_CURSOR)
                    .bind(edge_id.to_string())
                    .bind(cursor)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Master: deletes the collected events the master stored before
    /// `before_ms` (their `stored_ms`, by the master's clock: an edge whose
    /// clock is wrong neither loses its events early nor keeps them for
    /// good), then the oldest by arrival beyond the newest `keep` (0: no
    /// bound by count), at most `PRUNE_BATCH` per transaction so writers are
    /// never held long. Returns how many were deleted.
    pub async fn prune_events(&self, before_ms: i64, keep: u64) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let n = on_writer!(self, pool => {
                let mut tx = pool.begin().await?;
                let n = sqlx::query(sql::PRUNE_OLD_EVENTS).bind(before_ms).bind(PRUNE_BATCH).execute(&mut *tx).await?.rows_affected();
                tx.check_fence(&self.fence).await?;
                tx.commit().await?;
                n
            });
            deleted += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
        if keep == 0 {
            return Ok(deleted);
        }
        let count: i64 = on_reader!(self, pool => {
            sqlx::query_scalar(sql::COUNT_EVENTS).fetch_one(pool).await?
        });
        let mut excess = count - i64::try_from(keep).unwrap_or(i64::MAX);
        while excess > 0 {
            let n = on_writer!(self, pool => {
                let mut tx = pool.begin().await?;
                let n = sqlx::query(sql::PRUNE_FIRST_EVENTS).bind(excess.min(PRUNE_BATCH)).execute(&mut *tx).await?.rows_affected();
                tx.check_fence(&self.fence).await?;
                tx.commit().await?;
                n
            });
            if n == 0 {
                break;
            }
            deleted += n;
            excess -= n as i64;
        }
        Ok(deleted)
    }

    /// Master: where passive sync got to in `edge_id`'s log (0: nowhere yet).
    pub async fn sync_cursor(&self, edge_id: Uuid) -> Result<i64, StoreError> {
        let v: Option<i64> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::GET_CURSOR).bind(edge_id.to_string()).fetch_optional(pool).await?
        });
        Ok(v.unwrap_or(0))
    }

    /// Master: the events collected from `edge_id`, in arrival order.
    pub async fn events_of(
        &self,
        edge_id: Uuid,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows: Vec<EventRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::EVENTS_OF)
            .bind(edge_id.to_string())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(to_logged).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::sql;
    use crate::store::{Backend, Store, StoreOptions};

    /// The queries the edge runs on its log every second or every retry
    /// must search an index, never walk the log: a log holds up to
    /// `event_log_max` rows.
    #[tokio::test]
    async fn the_edges_periodic_log_queries_search_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let store = Store::open(&StoreOptions::new(url)).await.unwrap();
        let Backend::Sqlite { reader, .. } = &*store.backend else {
            unreachable!("a sqlite:// URL opens SQLite")
        };
        for (query, params) in [
            (sql::COUNT_UNSYNCED, 0),
            (sql::UNSYNCED_EVENTS, 2),
            (sql::TRIM_SYNCED, 1),
            (sql::TRIM_UNSYNCED_KIND, 2),
            (sql::DELETE_COALESCED, 2),
        ] {
            // Our own constants, nothing from outside.
            let explain = sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}"));
            let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(explain);
            for _ in 0..params {
                q = q.bind(0i64);
            }
            let plan = q.fetch_all(reader).await.unwrap();
            let steps: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert!(
                !steps.iter().any(|s| s.starts_with("SCAN events")),
                "{query} walks the log: {steps:?}"
            );
        }
    }
}
