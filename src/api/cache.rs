//! A read cache for the documents every device call looks up (the caller's
//! key, the module, the systems listing it, the edge location): without
//! it, one exec costs five store round trips before it reaches a runtime.
//!
//! An entry is valid while no write has committed through this process
//! since it was read (the store's commit watch) and for at most [`TTL`]:
//! writes by another process (an `outpost admin import`) are seen within
//! that time. Control state is cached the same way, invalidated by every
//! change of controller committed through this process (the store's
//! control broadcast).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::model::{Doc, Kind};
use crate::store::{ControlRecord, ControlState, Document, Store, StoreError};
use crate::util::Unpoisoned;

/// The longest an entry is trusted without a commit through this process.
pub(super) const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; beyond it the cache starts again empty.
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Get(Uuid),
    Referencing(&'static str, Uuid),
}

struct ControlEntry {
    generation: u64,
    at: Instant,
    state: Option<ControlState>,
}

/// Control states, valid until the next change of controller.
struct ControlCache {
    changes: broadcast::Receiver<ControlRecord>,
    generation: u64,
    entries: HashMap<Uuid, ControlEntry>,
}

impl ControlCache {
    /// Notes any change of controller since the last look.
    fn refresh(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.generation += 1;
                }
                Err(_) => return,
            }
        }
    }
}

struct Entry {
    seq: i64,
    at: Instant,
    docs: Vec<Document>,
}

/// A lookup's answer already parsed into its type, so that a hot path
/// (every exec looks up the caller's key, the module and its system) pays
/// neither the JSON parse nor the copy of the text.
struct ParsedEntry {
    seq: i64,
    at: Instant,
    value: Arc<dyn Any + Send + Sync>,
}

pub(super) struct ReadCache {
    commits: watch::Receiver<i64>,
    entries: Mutex<HashMap<Key, Entry>>,
    parsed: Mutex<HashMap<(Key, TypeId), ParsedEntry>>,
    control: Mutex<ControlCache>,
}

impl ReadCache {
    pub(super) fn new(store: &Store) -> Self {
        Self {
            commits: store.subscribe_commits(),
            entries: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            control: Mutex::new(ControlCache {
                changes: store.subscribe_control(),
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// [`Store::control_state`], cached.
    pub(super) async fn control_state(
        &self,
        store: &Store,
        edge_id: Uuid,
    ) -> Result<Option<ControlState>, StoreError> {
        let generation = {
            let mut c = self.control.lock_unpoisoned();
            c.refresh();
            if let Some(e) = c.entries.get(&edge_id)
                && e.generation == c.generation
                && e.at.elapsed() < TTL
            {
                return Ok(e.state);
            }
            c.generation
        };
        let state = store.control_state(edge_id).await?;
        let mut c = self.control.lock_unpoisoned();
        if c.entries.len() >= MAX_ENTRIES {
            c.entries.clear();
        }
        c.entries.insert(
            edge_id,
            ControlEntry {
                generation,
                at: Instant::now(),
                state,
            },
        );
        Ok(state)
    }

    fn cached(&self, key: Key, seq: i64) -> Option<Vec<Document>> {
        let entries = self.entries.lock_unpoisoned();
        let e = entries.get(&key)?;
        (e.seq == seq && e.at.elapsed() < TTL).then(|| e.docs.clone())
    }

    fn keep(&self, key: Key, seq: i64, docs: &[Document]) {
        let mut entries = self.entries.lock_unpoisoned();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                seq,
                at: Instant::now(),
                docs: docs.to_vec(),
            },
        );
    }

    /// [`Store::get`], cached.
    pub(super) async fn get(
        &self,
        store: &Store,
        id: Uuid,
    ) -> Result<Option<Document>, StoreError> {
        // The sequence number is taken before the read: a commit racing
        // with it leaves an entry that is already stale.
        let seq = *self.commits.borrow();
        if let Some(mut docs) = self.cached(Key::Get(id), seq) {
            return Ok(docs.pop());
        }
        let doc = store.get(id).await?;
        self.keep(Key::Get(id), seq, doc.as_slice());
        Ok(doc)
    }

    /// [`Store::referencing`], cached.
    pub(super) async fn referencing(
        &self,
        store: &Store,
        kind: Kind,
        target: Uuid,
    ) -> Result<Vec<Document>, StoreError> {
        let key = Key::Referencing(kind.as_str(), target);
        let seq = *self.commits.borrow();
        if let Some(docs) = self.cached(key, seq) {
            return Ok(docs);
        }
        let docs = store.referencing(kind, target).await?;
        self.keep(key, seq, &docs);
        Ok(docs)
    }

    fn cached_parsed<T: Any + Send + Sync>(&self, key: Key, seq: i64) -> Option<Arc<T>> {
        let parsed = self.parsed.lock_unpoisoned();
        let e = parsed.get(&(key, TypeId::of::<T>()))?;
        if e.seq != seq || e.at.elapsed() >= TTL {
            return None;
        }
        e.value.clone().downcast::<T>().ok()
    }

    fn keep_parsed<T: Any + Send + Sync>(&self, key: Key, seq: i64, value: Arc<T>) {
        let mut parsed = self.parsed.lock_unpoisoned();
        if parsed.len() >= MAX_ENTRIES {
            parsed.clear();
        }
        let at = Instant::now();
        parsed.insert((key, TypeId::of::<T>()), ParsedEntry { seq, at, value });
    }

    /// [`Store::get`] as a `D`, cached parsed: `None` when there is no such
    /// document or it is of another kind.
    pub(super) async fn get_parsed<D: Doc + Send + Sync + 'static>(
        &self,
        store: &Store,
        id: Uuid,
    ) -> Result<Option<Arc<D>>, StoreError> {
        let seq = *self.commits.borrow();
        let key = Key::Get(id);
        if let Some(hit) = self.cached_parsed::<Option<Arc<D>>>(key, seq) {
            return Ok(Option::clone(&hit));
        }
        let value = match self.get(store, id).await? {
            Some(d) if d.kind == D::KIND.as_str() => Some(Arc::new(d.parse::<D>()?)),
            _ => None,
        };
        self.keep_parsed(key, seq, Arc::new(value.clone()));
        Ok(value)
    }

    /// [`Store::referencing`] as `D`s, cached parsed.
    pub(super) async fn referencing_parsed<D: Doc + Send + Sync + 'static>(
        &self,
        store: &Store,
        target: Uuid,
    ) -> Result<Arc<Vec<D>>, StoreError> {
        let seq = *self.commits.borrow();
        let key = Key::Referencing(D::KIND.as_str(), target);
        if let Some(hit) = self.cached_parsed::<Vec<D>>(key, seq) {
            return Ok(hit);
        }
        let docs = self.referencing(store, D::KIND, target).await?;
        let value = Arc::new(
            docs.iter()
                .map(Document::parse)
                .collect::<Result<Vec<D>, _>>()?,
        );
        self.keep_parsed(key, seq, value.clone());
        Ok(value)
    }
}
